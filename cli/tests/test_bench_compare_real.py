"""`microshop bench --compare` on the real system, short: each mode starts fresh, drives its
checkouts, stops, and lands in one JSON answer and one PNG. Nothing about speed is asserted."""

import asyncio
import json
import sys

from cli_dummies import cli_env


async def test_compare_runs_microservices_and_monolith_fresh_and_writes_the_plot(tmp_path):
    plot = tmp_path / "compare.png"
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "microshop_cli", "bench", "--compare", "--modes", "microservices,monolith",
        "-n", "20", "-c", "4", "--json", "--plot", str(plot),
        cwd=tmp_path, env=cli_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(command.communicate(), timeout=120)
    assert command.returncode == 0, err.decode()[-3000:]

    answer = json.loads(out)
    assert [mode["mode"] for mode in answer["modes"]] == ["microservices", "monolith"]
    for mode in answer["modes"]:
        assert "skipped" not in mode, mode
        assert mode["confirmed"] == 20 and mode["outcomes"] == {"CONFIRMED": 20}
        assert mode["processes_total"]["cpu_ms_per_checkout"] > 0
        assert mode["pss_idle_mb"] > 0 and mode["up_ready_seconds"] > 0
    assert "monolith" in answer["modes"][1]["processes"] and "orders" not in answer["modes"][1]["processes"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

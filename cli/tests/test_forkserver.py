"""The fork server (forkserver.py) as the launcher uses it: a real server process, real children
run as `python -m MODULE`, their output in the log file handed over, their exit codes and signals
reported, their own session and environment; and the whole system started through it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_dummies import merging_pages
from microshop_cli.forkserver import fork, main_imports


@contextlib.contextmanager
def running_server(path: Path, *options: str) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "microshop_cli.forkserver", "--socket", str(path), *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the fork server did not come up"
            time.sleep(0.02)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "fork.sock"
    with running_server(path) as process:
        yield path, process


async def test_a_child_runs_the_module_as_main_with_its_own_log_env_and_args(server, tmp_path, monkeypatch):
    path, process = server
    (tmp_path / "probe.py").write_text(
        "import os, sys\nprint(__name__, sys.argv[1:], os.environ.get('MARK'), os.environ.get('HOME'))\n")
    monkeypatch.chdir(tmp_path)  # `python -m probe` finds it in the working directory, as forked too
    log = tmp_path / "child.log"
    with log.open("ab") as out:
        child = await fork(path, "probe", ["a", "b"], {"PATH": os.environ["PATH"], "MARK": "forked-1"}, out.fileno())
    assert child.pid != process.pid
    assert await child.wait() == 0
    assert log.read_text() == "__main__ ['a', 'b'] forked-1 None\n"  # its environment only, not the server's


async def test_exit_codes_and_signals_are_reported(server, tmp_path):
    path, _ = server
    env = {"PATH": os.environ["PATH"]}
    with (tmp_path / "child.log").open("ab") as out:
        failed = await fork(path, "json.tool", [str(tmp_path / "missing.json")], env, out.fileno())
        serving = await fork(path, "http.server", ["0", "--bind", "127.0.0.1"], env, out.fileno())
    assert await failed.wait() == 2  # argparse: no such file
    assert os.getsid(serving.pid) == serving.pid  # a session of its own, like the exec'd components
    await asyncio.sleep(0.2)
    serving.kill()
    assert await serving.wait() == -signal.SIGKILL


async def test_when_the_server_stops_its_children_stop_too(server, tmp_path):
    path, process = server
    with (tmp_path / "child.log").open("ab") as out:
        serving = await fork(path, "http.server", ["0", "--bind", "127.0.0.1"], {"PATH": os.environ["PATH"]},
                             out.fileno())
    process.terminate()
    assert await asyncio.wait_for(serving.wait(), 10) == -signal.SIGTERM  # drained, reported, then the server left


# CI's machine has it; elsewhere an older kernel may not.
@pytest.mark.skipif(not Path("/proc/self/ksm_stat").exists() and not os.environ.get("CI"),
                    reason="a kernel without KSM's per-process merging (Linux 6.4+)")
@pytest.mark.parametrize("merge", [True, False])
async def test_with_merge_pages_the_kernel_may_merge_the_pages_of_the_server_and_its_children(tmp_path, merge):
    path = tmp_path / "fork.sock"
    with running_server(path, *(["--merge-pages"] if merge else [])) as process, \
            (tmp_path / "child.log").open("ab") as out:
        child = await fork(path, "http.server", ["0", "--bind", "127.0.0.1"], {"PATH": os.environ["PATH"]},
                           out.fileno())
        try:
            assert merging_pages(process.pid) is merge
            assert merging_pages(child.pid) is merge  # inherited at the fork
        finally:
            child.kill()
            await child.wait()


def test_a_components_code_to_preload_is_read_from_its_main_not_run():
    # Read from the source: a service's __main__ serves its app when run.
    assert main_imports("microshop_orders") == ["microshop_chassis.runner", "microshop_orders.bootstrap"]
    # A plain module run as __main__ (no package) must not be imported beforehand; an unknown one is skipped.
    assert main_imports("json.tool") == []
    assert main_imports("no_such_package_here") == []


# CI runs as root: there it must run, so only a developer's own run as another user skips it.
@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                    reason="only root reads the physical pages in /proc/<pid>/pagemap")
def test_the_memory_tool_shows_what_building_an_app_copies_from_the_server():
    """docs/tools/forked_pages.py, which docs/performance.md's memory figures come from."""
    script = Path(__file__).resolve().parents[2] / "docs" / "tools" / "forked_pages.py"
    out = subprocess.run([sys.executable, str(script), "--build", "inventory", "--objects"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    megabytes = {}
    for line in out.splitlines():
        name = line.split(" shared ")[0].strip()
        kinds = re.findall(r"(shared|merged|copied|new)\s+([\d.]+) MB", line)
        megabytes[name] = {kind: float(mb) for kind, mb in kinds}
    idle, built = megabytes["did nothing"], megabytes["built inventory"]
    assert idle["shared"] > 50 and built["shared"] > 50  # the preloaded imports, still shared
    assert built["copied"] > idle["copied"] + 1  # building the app writes to the server's objects
    # ...among them code it runs and the functions it makes of it (reference counts, specialising)
    held = next(line for line in out.splitlines() if "the copied pages hold:" in line)
    assert re.search(r"\bcode \d+%", held) and re.search(r"\bfunction \d+%", held), held

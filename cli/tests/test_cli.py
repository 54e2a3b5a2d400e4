"""The `microshop` command: CliRunner where nothing runs, real subprocesses for a detached system."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from cli_dummies import cli_env, process_gone, read_events
from microshop_chassis.testing import wait_for_sync
from microshop_cli.components import free_ports
from microshop_cli.main import app
from microshop_cli.state import DataDir, read_state, running_supervisor
from typer.testing import CliRunner

runner = CliRunner()
FACTORY = "cli_dummies:two_step_factory"


def microshop(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    """The real command in a real process; COLUMNS keeps Rich from wrapping the tables."""
    return subprocess.run([sys.executable, "-m", "microshop_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(COLUMNS="200", **env))


# --- nothing running --------------------------------------------------------------------------


def test_status_when_nothing_runs_says_so_and_exits_1(tmp_path):
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "microshop is not running" in result.output


def test_status_json_when_nothing_runs(tmp_path):
    result = runner.invoke(app, ["status", "--json", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert json.loads(result.output) == {"running": False, "data_dir": str(tmp_path.resolve()), "components": []}


def test_down_when_nothing_runs_says_so_exits_0_and_clears_a_stale_state(tmp_path):
    paths = DataDir(tmp_path)
    paths.create()
    paths.state_file.write_text(json.dumps({"supervisor_pid": 999999, "processes": {}}))  # from a killed supervisor
    result = runner.invoke(app, ["down", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "microshop is not running" in result.output
    assert not paths.state_file.exists()


def test_a_malformed_port_option_is_refused(tmp_path):
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--port", "gateway"])
    assert result.exit_code == 1
    assert "--port wants NAME=PORT" in result.output


def test_logs_prints_the_last_lines_of_each_log_prefixed_with_its_name(tmp_path):
    paths = DataDir(tmp_path)
    paths.create()
    paths.log_file("users").write_text("".join(f"users line {n}\n" for n in range(10)))
    paths.log_file("nats").write_text("nats line 1\nnats line 2\n")
    paths.supervisor_log.write_text("supervisor line\n")

    result = runner.invoke(app, ["logs", "--data-dir", str(tmp_path), "-n", "2"])

    assert result.exit_code == 0
    lines = [line.rstrip() for line in result.output.splitlines()]
    # Start order: nats before users; the supervisor's log last.
    assert lines == ["nats       | nats line 1", "nats       | nats line 2", "users      | users line 8",
                     "users      | users line 9", "supervisor | supervisor line"]


def test_logs_of_one_component_are_unprefixed_and_an_unknown_one_is_an_error(tmp_path):
    paths = DataDir(tmp_path)
    paths.create()
    paths.log_file("orders").write_text("first\nsecond\nthird\n")

    result = runner.invoke(app, ["logs", "orders", "--data-dir", str(tmp_path), "--lines", "2"])
    assert (result.exit_code, result.output) == (0, "second\nthird\n")

    result = runner.invoke(app, ["logs", "ordrs", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no log for 'ordrs'" in result.output and "orders" in result.output


async def test_logs_follow_prints_new_lines_until_interrupted(tmp_path):
    paths = DataDir(tmp_path)
    paths.create()
    log = paths.log_file("users")
    log.write_text("old line\n")
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "microshop_cli.main", "logs", "users", "-f", "--data-dir", str(tmp_path),
        stdout=subprocess.PIPE, env=cli_env())
    try:
        assert await asyncio.wait_for(follower.stdout.readline(), 10) == b"old line\n"
        with log.open("a") as file:
            file.write("new line\n")
        assert await asyncio.wait_for(follower.stdout.readline(), 10) == b"new line\n"
        follower.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(follower.wait(), 10) == 0
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()


# --- foreground up ------------------------------------------------------------------------------


def start_foreground(tmp_path, **env: str) -> tuple[subprocess.Popen, DataDir]:
    ports = free_ports(["alpha", "beta"])
    command = [sys.executable, "-m", "microshop_cli.main", "up", "--data-dir", str(tmp_path / "data"),
               "--components", FACTORY, "--port", f"alpha={ports['alpha']}", "--port", f"beta={ports['beta']}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=cli_env(COLUMNS="200", **env))
    return process, DataDir(tmp_path / "data")


def test_up_in_the_foreground_shows_the_panel_and_stops_cleanly_on_ctrl_c(tmp_path):
    up, paths = start_foreground(tmp_path)
    try:
        wait_for_sync(lambda: (read_state(paths) or {}).get("status") == "running", 30, "the system to run")
        pids = [info["pid"] for info in read_state(paths)["processes"].values()]
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=30)
    finally:
        up.kill()
    assert up.returncode == 0, output
    assert "microshop is up" in output and "microshop stopped." in output
    assert len(pids) == 2 and all(process_gone(pid) for pid in pids)
    assert not paths.state_file.exists()


def test_down_during_start_up_stops_what_was_started(tmp_path):
    events = tmp_path / "events"
    # alpha never gets ready (its gate file is never created), so up stays in its first step.
    up, paths = start_foreground(tmp_path, CLI_DUMMIES_EVENTS=str(events), CLI_DUMMIES_GATE=str(tmp_path / "gate"))
    try:
        wait_for_sync(lambda: "alpha" in (read_state(paths) or {}).get("processes", {}), 30, "alpha to start")
        alpha = read_state(paths)["processes"]["alpha"]["pid"]
        down = microshop("down", "--data-dir", str(paths.root))
        up.communicate(timeout=30)
    finally:
        up.kill()
    assert down.returncode == 0 and "microshop stopped" in down.stdout
    assert process_gone(alpha)
    assert [(kind, name) for kind, name, _ in read_events(events)] == [("start", "alpha"), ("stop", "alpha")]


# --- a detached system of dummies --------------------------------------------------------------


@pytest.fixture
def detached(tmp_path):
    """`microshop up --detach` on two dummies (alpha, then beta); torn down with `microshop down`."""
    ports = free_ports(["alpha", "beta"])
    events = tmp_path / "events"
    args = ["--data-dir", str(tmp_path / "data"), "--components", FACTORY,
            "--port", f"alpha={ports['alpha']}", "--port", f"beta={ports['beta']}"]
    result = microshop("up", "--detach", *args, CLI_DUMMIES_EVENTS=str(events))
    assert result.returncode == 0, result.stdout + result.stderr
    paths = DataDir(tmp_path / "data")
    yield paths, result, args, events
    pids = [info["pid"] for info in (read_state(paths) or {}).get("processes", {}).values()]
    microshop("down", "--data-dir", str(paths.root))
    for pid in pids:  # whatever a failed test left behind
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_up_detach_status_logs_and_down(detached):
    paths, up, args, events = detached
    assert "microshop is up" in up.stdout
    state = read_state(paths)
    assert state["status"] == "running"
    supervisor = state["supervisor_pid"]
    assert running_supervisor(paths) == supervisor
    pids = {name: info["pid"] for name, info in state["processes"].items()}
    assert list(pids) == ["alpha", "beta"]
    assert all(str(info["url"]) in up.stdout for info in state["processes"].values())

    status = microshop("status", "--data-dir", str(paths.root))
    assert status.returncode == 0, status.stdout
    for name, pid in pids.items():
        row = next(line for line in status.stdout.splitlines() if f" {name} " in line)
        assert str(pid) in row and " ok " in row and "9.9.9" in row

    as_json = json.loads(microshop("status", "--json", "--data-dir", str(paths.root)).stdout)
    assert as_json["supervisor_pid"] == supervisor
    assert [(c["name"], c["pid"], c["health"]) for c in as_json["components"]] == [
        ("alpha", pids["alpha"], "ok"), ("beta", pids["beta"], "ok")]
    # The dummies are exec'd, not forked: no fork server, so the total is theirs alone.
    assert all(c["pss_mb"] > 1 for c in as_json["components"]) and as_json["fork_server"] is None
    assert as_json["pss_mb_total"] == pytest.approx(sum(c["pss_mb"] for c in as_json["components"]), abs=0.2)
    assert "PSS in all:" in status.stdout  # the table's caption (its figure moves with every page touched)

    again = microshop("up", "--detach", *args)
    assert again.returncode == 1
    assert f"already running for {paths.root} (supervisor pid {supervisor})" in again.stdout

    logs = microshop("logs", "--data-dir", str(paths.root))
    assert f"alpha      | dummy alpha listening on {state['processes']['alpha']['port']}" in logs.stdout
    assert "supervisor | " in logs.stdout and "all components ready" in logs.stdout

    down = microshop("down", "--data-dir", str(paths.root))
    assert down.returncode == 0 and "microshop stopped" in down.stdout
    assert process_gone(supervisor) and all(process_gone(pid) for pid in pids.values())
    assert not paths.state_file.exists()
    assert [(kind, name) for kind, name, _ in read_events(events)] == [
        ("start", "alpha"), ("start", "beta"), ("stop", "beta"), ("stop", "alpha")]


def test_status_exits_1_and_shows_down_when_a_component_does_not_answer(detached):
    paths, *_ = detached
    beta = read_state(paths)["processes"]["beta"]["pid"]
    os.kill(beta, signal.SIGSTOP)  # alive but silent: the supervisor has nothing to restart
    try:
        status = microshop("status", "--data-dir", str(paths.root))
    finally:
        os.kill(beta, signal.SIGCONT)
    assert status.returncode == 1
    row = next(line for line in status.stdout.splitlines() if " beta " in line)
    assert " down " in row
    assert " ok " in next(line for line in status.stdout.splitlines() if " alpha " in line)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
def test_a_sigkilled_supervisor_takes_its_children_with_it(detached):
    paths, *_ = detached
    state = read_state(paths)
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    for name, info in state["processes"].items():
        wait_for_sync(lambda pid=info["pid"]: process_gone(pid), 10, f"{name} to die with its supervisor")
    wait_for_sync(lambda: running_supervisor(paths) is None, 10, "the supervisor lock to be released")

    assert microshop("status", "--data-dir", str(paths.root)).returncode == 1
    down = microshop("down", "--data-dir", str(paths.root))
    assert down.returncode == 0 and "not running" in down.stdout
    assert not paths.state_file.exists()


def test_up_detach_refuses_a_busy_port_naming_it(tmp_path):
    ports = free_ports(["alpha", "beta"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["beta"]))
        squatter.listen()
        began = time.monotonic()
        result = microshop("up", "--detach", "--data-dir", str(tmp_path), "--components", FACTORY,
                           "--port", f"alpha={ports['alpha']}", "--port", f"beta={ports['beta']}")
    assert result.returncode == 1
    assert f"port {ports['beta']} (beta) is already in use" in result.stdout
    assert time.monotonic() - began < 10
    assert not DataDir(tmp_path).state_file.exists()


def test_up_detach_shows_the_supervisor_log_when_start_up_fails(tmp_path):
    # Its only component dies at start: the background supervisor gives up and `up` shows why.
    result = microshop("up", "--detach", "--data-dir", str(tmp_path), "--components", "cli_dummies:broken_factory")
    assert result.returncode == 1
    assert "the supervisor exited with code 1 while starting" in result.stdout
    assert "broken exited with code 7 before it was ready" in result.stdout
    assert running_supervisor(DataDir(tmp_path)) is None


def test_status_shows_circuit_breakers_reported_in_health():
    """status reads each component's /health; breakers that are not closed are named."""
    from aiohttp import web
    from microshop_cli.main import format_circuits
    from microshop_cli.status import check_all

    async def scenario():
        async def health(_request):
            return web.json_response({"status": "ok", "version": "9.9",
                                      "circuit_breakers": {"inventory": "closed", "payments": "open"}})

        server = web.Application()
        server.router.add_get("/health", health)
        runner = web.AppRunner(server)
        await runner.setup()
        port = free_ports(["probe"])["probe"]
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            return await check_all({"orders": {"pid": 1, "port": port, "url": f"http://127.0.0.1:{port}",
                                               "health_url": f"http://127.0.0.1:{port}/health"}})
        finally:
            await runner.cleanup()

    [orders] = asyncio.run(scenario())
    assert orders.health == "ok" and orders.version == "9.9"
    assert orders.circuit_breakers == {"inventory": "closed", "payments": "open"}
    assert format_circuits(orders.circuit_breakers).plain == "payments: open"
    assert format_circuits({"inventory": "closed"}).plain == "closed"
    assert format_circuits({}).plain == "-"

"""`microshop up --replicas`, `scale` and `deploy` as a user types them: what may scale and what
the command says when it may not, and the way to a running supervisor (its control socket).
Scaling and rolling deploys under load are tested on the whole system in
tests/lifecycle/test_replicas.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from cli_dummies import cli_env, process_gone
from microshop_cli.components import free_ports
from microshop_cli.errors import MicroshopError
from microshop_cli.main import app
from microshop_cli.scaling import check_replicas, parse_counts
from microshop_cli.state import DataDir, read_state
from typer.testing import CliRunner

runner = CliRunner()


def test_replica_counts_are_read_from_repeated_or_comma_separated_options():
    assert parse_counts(["payments=3,orders=2", "users=1"]) == {"payments": 3, "orders": 2, "users": 1}
    for bad in ("payments", "payments=x", "=3"):
        with pytest.raises(MicroshopError, match="SERVICE=N"):
            parse_counts(bad)


@pytest.mark.parametrize(("service", "postgres", "says"), [
    ("payments", False, "microshop up --postgres"),  # SQLite: one writer
    ("reports", True, "one DuckDB file"),
    ("gateway", True, "load balancer"),
    ("shipping", True, "no service named 'shipping'"),
])
def test_what_cannot_scale_says_why_and_what_to_do(service, postgres, says):
    with pytest.raises(MicroshopError) as refusal:
        check_replicas(service, 2, postgres=postgres)
    assert says in str(refusal.value)
    check_replicas(service if service != "shipping" else "users", 1, postgres=postgres)  # one is always fine


def test_up_with_replicas_on_sqlite_is_refused_before_anything_starts(tmp_path):
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--replicas", "payments=2"])
    assert result.exit_code == 1
    assert "microshop up --postgres" in result.output
    assert not (tmp_path / "run").exists()


def microshop(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "microshop_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(COLUMNS="200"))


@pytest.fixture
def users_running(tmp_path):
    """`microshop up --detach` with NATS and the real users service (SQLite)."""
    ports = free_ports(["nats", "users"])
    args = ["--data-dir", str(tmp_path / "data")]
    result = microshop("up", "--detach", "--no-seed", "--components", "cli_dummies:broker_and_users", *args,
                       "--port", f"nats={ports['nats']}", "--port", f"users={ports['users']}")
    assert result.returncode == 0, result.stdout + result.stderr
    paths = DataDir(tmp_path / "data")
    yield paths, args
    pids = [info["pid"] for info in (read_state(paths) or {}).get("processes", {}).values()]
    microshop("down", *args)
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_scale_and_deploy_reach_the_running_supervisor(users_running):
    paths, args = users_running
    assert (paths.run / "control.sock").stat().st_mode & 0o077 == 0  # its owner's only

    refused = microshop("scale", "users=2", *args)
    assert refused.returncode == 1
    assert "microshop up --postgres" in refused.stdout

    first_pid = read_state(paths)["processes"]["users"]["pid"]
    deployed = microshop("deploy", "users", "--version", "9.9", *args)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "users replaced by users-2" in deployed.stdout
    assert process_gone(first_pid)  # drained and stopped
    status = json.loads(microshop("status", "--json", *args).stdout)
    users = [c for c in status["components"] if c["name"].startswith("users")]
    assert [(c["name"], c["version"], c["health"]) for c in users] == [("users-2", "9.9", "ok")]

    broken = microshop("deploy", "users", "--env", "MICROSHOP_USERS_MAX_IN_FLIGHT=many", *args)
    assert broken.returncode == 1
    assert "rolled back" in broken.stdout
    status = json.loads(microshop("status", "--json", *args).stdout)
    assert [(c["name"], c["version"], c["health"]) for c in status["components"]
            if c["name"].startswith("users")] == [("users-2", "9.9", "ok")]


@pytest.mark.parametrize(("args", "says"), [
    (["--monolith", "--workers", "2"], "--postgres"),  # SQLite: one writer per file
    (["--workers", "2"], "--monolith"),
    (["--monolith", "--replicas", "payments=2", "--postgres"], "--workers N"),
    (["--monolith", "--chaos-proxies"], "in-process"),
])
def test_a_monolith_that_cannot_run_that_way_is_refused_before_anything_starts(tmp_path, args, says):
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 1, result.output
    assert says in result.output
    assert not (tmp_path / "run").exists()


def test_the_monolith_is_one_process_on_the_gateways_port_running_every_service_but_the_storefront(tmp_path):
    from microshop_cli.components import MONOLITH, default_components
    from microshop_cli.system import SystemConfig

    config = SystemConfig.with_free_ports(tmp_path, monolith=True)
    by_name = {component.name: component for component in default_components(config)}
    monolith = by_name[MONOLITH]
    assert monolith.port == config.ports["gateway"]
    assert set(monolith.modules) == {"users", "inventory", "orders", "payments", "notifications", "reports", "gateway"}
    assert "storefront" in by_name and not {"orders", "gateway", "reports"} & set(by_name)

    # With workers, reports (one DuckDB file, one writer) stays a process of its own.
    workers = SystemConfig.with_free_ports(tmp_path, monolith=True, workers=3, postgres="postgresql://x@h/db")
    by_name = {component.name: component for component in default_components(workers)}
    assert "reports" not in by_name[MONOLITH].modules and by_name["reports"].service == "reports"
    assert by_name[MONOLITH].env["MICROSHOP_MONOLITH_WORKERS"] == "3"

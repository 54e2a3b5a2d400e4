"""The supervisor (System) on small real dummy processes: order, readiness, restarts, state, stop."""

import asyncio
import json
import os
import signal
import socket
import stat
import time
from datetime import datetime

import pytest
from cli_dummies import dummy, get_json, process_gone, read_events
from microshop_chassis.testing import wait_until
from microshop_cli import nats_cluster
from microshop_cli.components import CHAOS_PORTS, DEFAULT_PORTS, free_ports
from microshop_cli.errors import AlreadyRunningError, PortInUseError, SeedError, StartupError
from microshop_cli.state import DataDir, read_state, running_supervisor
from microshop_cli.system import Backoff, BackoffPolicy, System, SystemConfig

FAST_BACKOFF = BackoffPolicy(initial=0.2, maximum=1.0, reset_after=30.0)


def config_for(tmp_path, components, **options) -> SystemConfig:
    return SystemConfig(data_dir=tmp_path / "data", components=lambda _config: components, seed=False, **options)


async def test_starts_step_by_step_and_stops_in_reverse_leaving_no_process(tmp_path):
    events = tmp_path / "events"
    ports = free_ports(["a", "b", "c", "d"])
    components = [dummy("delta", ports["d"], 2, events=events), dummy("alpha", ports["a"], 0, events=events),
                  dummy("beta", ports["b"], 1, events=events), dummy("gamma", ports["c"], 1, events=events)]

    async with System(config_for(tmp_path, components)) as system:
        assert system.names == ["alpha", "beta", "gamma", "delta"]
        assert all(system.is_ready(name) for name in system.names)
        pids = {name: system.pid(name) for name in system.names}

    starts = [name for kind, name, _ in read_events(events) if kind == "start"]
    stops = [name for kind, name, _ in read_events(events) if kind == "stop"]
    assert starts[0] == "alpha" and set(starts[1:3]) == {"beta", "gamma"} and starts[3] == "delta"
    assert stops[0] == "delta" and set(stops[1:3]) == {"beta", "gamma"} and stops[3] == "alpha"
    assert all(process_gone(pid) for pid in pids.values())
    assert not (tmp_path / "data" / "run" / "state.json").exists()
    assert running_supervisor(DataDir(tmp_path / "data")) is None


async def test_a_step_starts_only_when_the_previous_one_is_ready(tmp_path):
    events, gate = tmp_path / "events", tmp_path / "gate"
    ports = free_ports(["a", "b"])
    components = [dummy("alpha", ports["a"], 0, events=events, gate=gate), dummy("beta", ports["b"], 1, events=events)]
    system = System(config_for(tmp_path, components))
    starting = asyncio.create_task(system.start())
    try:
        async def supervisor_polled_alpha_repeatedly():
            try:
                _, body = await get_json(f"http://127.0.0.1:{ports['a']}/ready-polls")
            except OSError:
                return False
            return body["count"] >= 3

        await wait_until(supervisor_polled_alpha_repeatedly, timeout=10, what="readiness polls of alpha")
        assert not starting.done()
        assert [name for _, name, _ in read_events(events)] == ["alpha"]  # beta waits
        assert set(read_state(DataDir(tmp_path / "data"))["processes"]) == {"alpha"}

        gate.touch()
        await asyncio.wait_for(starting, 10)
        assert [name for _, name, _ in read_events(events)] == ["alpha", "beta"]
    finally:
        await system.stop()


async def test_state_json_describes_every_process(tmp_path):
    ports = free_ports(["a", "g"])
    components = [dummy("alpha", ports["a"], 0), dummy("gateway", ports["g"], 1)]

    async with System(config_for(tmp_path, components)) as system:
        state = json.loads((tmp_path / "data" / "run" / "state.json").read_text())

    assert state["supervisor_pid"] == os.getpid()
    assert state["status"] == "running"
    assert state["data_dir"] == str((tmp_path / "data").resolve())
    assert state["gateway_url"] == f"http://127.0.0.1:{ports['g']}"
    datetime.fromisoformat(state["started_at"])
    assert list(state["processes"]) == ["alpha", "gateway"]
    alpha = state["processes"]["alpha"]
    assert alpha["pid"] == system.pid("alpha")
    assert alpha["port"] == ports["a"]
    assert alpha["url"] == f"http://127.0.0.1:{ports['a']}"
    assert alpha["health_url"] == f"http://127.0.0.1:{ports['a']}/health"
    assert alpha["restarts"] == 0
    datetime.fromisoformat(alpha["started_at"])


async def test_a_killed_process_is_restarted_with_growing_backoff_and_a_new_pid(tmp_path):
    ports = free_ports(["a", "b"])
    components = [dummy("alpha", ports["a"], 0), dummy("beta", ports["b"], 1)]
    data = DataDir(tmp_path / "data")

    async with System(config_for(tmp_path, components, backoff=FAST_BACKOFF)) as system:
        first_pid = system.pid("beta")
        began = time.monotonic()
        assert system.kill("beta", signal.SIGKILL) == first_pid
        second_pid = await system.wait_ready("beta", timeout=10)
        first_restart_took = time.monotonic() - began

        assert second_pid != first_pid and process_gone(first_pid)
        assert system.restarts("beta") == 1 and system.restarts("alpha") == 0
        assert first_restart_took >= FAST_BACKOFF.initial
        state = read_state(data)["processes"]["beta"]
        assert (state["pid"], state["restarts"]) == (second_pid, 1)
        status, _ = await get_json(system.url("beta") + "/health")
        assert status == 200

        # It died again right away, so the next restart waits twice as long.
        began = time.monotonic()
        system.kill("beta", signal.SIGKILL)
        third_pid = await system.wait_ready("beta", timeout=10)
        assert time.monotonic() - began >= 2 * FAST_BACKOFF.initial
        assert third_pid not in (first_pid, second_pid)
        assert read_state(data)["processes"]["beta"]["restarts"] == 2

    supervisor_log = data.supervisor_log.read_text()
    assert f"beta (pid {first_pid}) exited with code -9" in supervisor_log
    assert "restarting in 0.4 s" in supervisor_log
    assert process_gone(third_pid)


def test_backoff_doubles_up_to_the_cap_and_resets_after_a_long_run():
    backoff = Backoff(BackoffPolicy())
    assert [backoff.next_delay(uptime=1) for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    assert backoff.next_delay(uptime=30) == 0.5
    assert backoff.next_delay(uptime=1) == 1


async def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    ports = free_ports(["a"])
    components = [dummy("stubborn", ports["a"], 0, ignore_sigterm=True)]
    system = System(config_for(tmp_path, components, stop_timeout=0.5))
    await system.start()
    pid = system.pid("stubborn")
    began = time.monotonic()
    await system.stop()

    assert time.monotonic() - began >= 0.5
    assert process_gone(pid)
    assert f"stubborn (pid {pid}) ignored SIGTERM for 0.5 s; killing it" in system.paths.supervisor_log.read_text()


async def test_a_port_in_use_is_named_with_its_component_and_nothing_starts(tmp_path):
    events = tmp_path / "events"
    ports = free_ports(["a", "b"])
    components = [dummy("alpha", ports["a"], 0, events=events), dummy("beta", ports["b"], 1, events=events)]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["b"]))
        squatter.listen()
        with pytest.raises(PortInUseError, match=f"port {ports['b']} \\(beta\\) is already in use"):
            await System(config_for(tmp_path, components)).start()

    assert read_events(events) == []
    assert not (tmp_path / "data" / "run" / "state.json").exists()
    async with System(config_for(tmp_path, components)) as system:  # the failed attempt left the lock free
        assert system.is_ready("beta")


async def test_two_components_on_one_port_are_refused(tmp_path):
    port = free_ports(["a"])["a"]
    components = [dummy("alpha", port, 0), dummy("beta", port, 1)]
    with pytest.raises(PortInUseError, match=f"port {port} \\(beta\\) is also configured for alpha"):
        await System(config_for(tmp_path, components)).start()


async def test_a_second_supervisor_for_the_same_data_dir_is_refused(tmp_path):
    ports = free_ports(["a", "b"])
    async with System(config_for(tmp_path, [dummy("alpha", ports["a"], 0)])) as first:
        with pytest.raises(AlreadyRunningError, match=f"supervisor pid {os.getpid()}"):
            await System(config_for(tmp_path, [dummy("other", ports["b"], 0)])).start()
        # The refused one must not have touched the running system's state.
        assert read_state(first.paths)["processes"]["alpha"]["pid"] == first.pid("alpha")
        status, _ = await get_json(first.url("alpha") + "/health")
        assert status == 200


async def test_a_component_that_dies_at_start_fails_up_with_its_log_and_stops_the_rest(tmp_path):
    ports = free_ports(["a", "b"])
    components = [dummy("alpha", ports["a"], 0), dummy("broken", ports["b"], 1, exit_code=3)]
    system = System(config_for(tmp_path, components))
    with pytest.raises(StartupError) as failure:
        await system.start()

    assert "broken exited with code 3 before it was ready" in str(failure.value)
    assert "dummy broken failing on purpose with code 3" in str(failure.value)
    assert process_gone(system.pid("alpha"))
    assert not system.paths.state_file.exists()
    assert running_supervisor(system.paths) is None


async def test_a_failed_seed_fails_start_and_stops_everything(tmp_path):
    # The dummy gateway has no login route, so seeding through it must fail loudly.
    ports = free_ports(["g"])
    config = config_for(tmp_path, [dummy("gateway", ports["g"], 0)])
    config.seed = True
    system = System(config)
    with pytest.raises(SeedError, match="admin login as admin@microshop.local failed: HTTP 501"):
        await system.start()
    assert process_gone(system.pid("gateway"))


async def test_every_process_gets_the_system_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROSHOP_ORDERS_DATABASE_URL", "postgresql+asyncpg://shop@db/orders")
    monkeypatch.setenv("MICROSHOP_USERS_PORT", "1")  # ours must win over a stray one
    monkeypatch.delenv("MICROSHOP_SERVICE_SECRET", raising=False)
    monkeypatch.delenv("MICROSHOP_ADMIN_PASSWORD", raising=False)
    config = SystemConfig.with_free_ports(tmp_path / "data", seed=False,
                                          extra_env={"MICROSHOP_ORDERS_RESERVATION_TTL_SECONDS": "2"})
    config.components = lambda c: [dummy("alpha", c.ports["users"], 0)]

    async with System(config) as system:
        _, env = await get_json(system.url("alpha") + "/env")

    ports, data = config.ports, (tmp_path / "data").resolve()
    secret_file = data / "secrets" / "service-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert env["MICROSHOP_SERVICE_SECRET"] == secret_file.read_text()
    assert env["MICROSHOP_DATA_DIR"] == str(data)
    assert env["MICROSHOP_NATS_URL"] == f"nats://127.0.0.1:{ports['nats']}"
    for name in ("users", "inventory", "orders", "payments", "notifications", "reports"):
        assert env[f"MICROSHOP_{name.upper()}_HOST"] == "127.0.0.1"
        assert env[f"MICROSHOP_{name.upper()}_PORT"] == str(ports[name])
        assert env[f"MICROSHOP_{name.upper()}_URL"] == f"http://127.0.0.1:{ports[name]}"
    assert env["MICROSHOP_GATEWAY_PORT"] == str(ports["gateway"])
    assert env["MICROSHOP_CARD_PROCESSOR_URL"] == f"http://127.0.0.1:{ports['card-processor']}"
    assert (env["MICROSHOP_SMTP_HOST"], env["MICROSHOP_SMTP_PORT"]) == ("127.0.0.1", str(ports["smtp"]))
    assert env["MICROSHOP_ADMIN_EMAIL"] == "admin@microshop.local"
    assert env["MICROSHOP_ADMIN_PASSWORD"] == "microshop-admin"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MICROSHOP_ORDERS_DATABASE_URL"] == "postgresql+asyncpg://shop@db/orders"
    assert env["MICROSHOP_ORDERS_RESERVATION_TTL_SECONDS"] == "2"

    # The secret is generated once: the next start uses the same one.
    async with System(config) as system:
        _, again = await get_json(system.url("alpha") + "/env")
    assert again["MICROSHOP_SERVICE_SECRET"] == env["MICROSHOP_SERVICE_SECRET"]


async def test_a_service_secret_from_the_environment_is_used_and_not_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROSHOP_SERVICE_SECRET", "from-the-shell")
    port = free_ports(["a"])["a"]
    async with System(config_for(tmp_path, [dummy("alpha", port, 0)])) as system:
        _, env = await get_json(system.url("alpha") + "/env")
    assert env["MICROSHOP_SERVICE_SECRET"] == "from-the-shell"
    assert not (tmp_path / "data" / "secrets" / "service-secret").exists()


async def test_an_older_launchers_secret_is_carried_over_into_the_secrets_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MICROSHOP_SERVICE_SECRET", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    (data / "secrets.json").write_text(json.dumps({"service_secret": "kept-from-before"}))
    port = free_ports(["a"])["a"]
    async with System(config_for(tmp_path, [dummy("alpha", port, 0)])) as system:
        _, env = await get_json(system.url("alpha") + "/env")
    assert env["MICROSHOP_SERVICE_SECRET"] == "kept-from-before"
    assert (data / "secrets" / "service-secret").read_text() == "kept-from-before"
    assert not (data / "secrets.json").exists()


async def test_the_data_dir_is_private_and_children_create_private_files(tmp_path, monkeypatch):
    monkeypatch.delenv("MICROSHOP_SERVICE_SECRET", raising=False)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # an older launcher's (or a shell's) mode: tightened at start
    port = free_ports(["a"])["a"]
    async with System(config_for(tmp_path, [dummy("alpha", port, 0)])) as system:
        _, umask = await get_json(system.url("alpha") + "/umask")
    assert umask == {"umask": 0o077}
    for folder in (data, data / "logs", data / "run", data / "secrets"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for private in (data / "logs" / "alpha.log", data / "secrets" / "service-secret",
                    data / "secrets" / "nats-passwords.json", data / "secrets" / "nats-server.conf"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert "mode is now 0700" in (data / "run" / "supervisor.log").read_text()


async def test_each_service_gets_its_own_broker_user_and_no_other_process_sees_it(tmp_path, monkeypatch):
    for name in ("MICROSHOP_NATS_USER", "MICROSHOP_NATS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    ports = free_ports(["orders", "stranger"])
    components = [dummy("orders", ports["orders"], 0), dummy("stranger", ports["stranger"], 0)]
    async with System(config_for(tmp_path, components)) as system:
        _, orders_env = await get_json(system.url("orders") + "/env")
        _, stranger_env = await get_json(system.url("stranger") + "/env")
        orders_password = system.broker_password("orders")
    passwords = json.loads((tmp_path / "data" / "secrets" / "nats-passwords.json").read_text())
    assert orders_env["MICROSHOP_NATS_USER"] == "orders"
    assert orders_env["MICROSHOP_NATS_PASSWORD"] == orders_password == passwords["orders"]
    assert "MICROSHOP_NATS_PASSWORD" not in stranger_env
    assert len(set(passwords.values())) == len(passwords)  # one password per user
    assert orders_password not in (tmp_path / "data" / "run" / "supervisor.log").read_text()


def test_with_free_ports_gives_every_port_name_a_distinct_free_port(tmp_path):
    config = SystemConfig.with_free_ports(tmp_path, ports={"gateway": 18080})
    names = {*DEFAULT_PORTS, *CHAOS_PORTS, *nats_cluster.PORT_NAMES}  # chaos proxies', cluster nodes', used or not
    assert set(config.ports) == names
    assert config.ports["gateway"] == 18080
    assert len(set(config.ports.values())) == len(names)
    assert not set(config.ports.values()) & {*DEFAULT_PORTS.values(), *CHAOS_PORTS.values()}


async def test_a_component_killed_with_down_for_stays_down_until_held_time_or_release(tmp_path):
    ports = free_ports(["a"])
    components = [dummy("alpha", ports["a"], 0)]
    async with System(config_for(tmp_path, components, backoff=FAST_BACKOFF)) as system:
        first_pid = system.pid("alpha")
        system.kill("alpha", down_for=60)
        async def gone():
            return process_gone(first_pid)

        await wait_until(gone, timeout=5, what="alpha to die")
        # Well past the backoff, the hold keeps it down; the supervisor has not restarted it.
        with pytest.raises(TimeoutError):
            await system.wait_ready("alpha", timeout=FAST_BACKOFF.initial * 4)
        assert system.restarts("alpha") == 0
        system.release("alpha")
        second_pid = await system.wait_ready("alpha", timeout=10)
        assert second_pid != first_pid and system.restarts("alpha") == 1

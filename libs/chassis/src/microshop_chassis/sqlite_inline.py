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
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import structlog

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

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
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
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        """aiosqlite's forced close, used when SQLAlchemy terminates a connection."""
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def inline_creator(path: str, checkpointer: WalCheckpointer | None = None):
    """An ``async_creator`` for ``create_async_engine("sqlite+aiosqlite:///...")``; the first
    connection starts ``checkpointer`` (in the process that uses the database, even after a fork)."""

    async def connect(*_args: Any, **_kwargs: Any) -> InlineConnection:
        # check_same_thread=False: SQLAlchemy may close a pooled connection from its finaliser;
        # every statement still runs on the event loop's thread.
        connection = InlineConnection(sqlite3.connect(path, check_same_thread=False))
        if checkpointer is not None:
            checkpointer.start()
        return connection

    return connect


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

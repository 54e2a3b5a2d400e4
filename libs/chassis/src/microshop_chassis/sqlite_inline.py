"""SQLite for SQLAlchemy's asyncio engine without a thread hop per call.

aiosqlite runs every call (cursor, execute, fetch, close, commit) on a worker thread and hands the
result back through the event loop: measured here, ~0.95 ms per query through SQLAlchemy, which
caps a service near 1,000 statements/s. A SQLite statement on a local WAL file with
synchronous=NORMAL takes tens of microseconds and never waits on the network, so running it right
on the event loop is cheaper than the hop itself (docs/performance.md has the figures).

This module is the smallest aiosqlite-shaped wrapper over the standard library's sqlite3 that
SQLAlchemy's aiosqlite dialect needs; the engine uses it through ``async_creator``. The trade-off,
stated plainly: a statement blocks the loop while it runs, so this is for short OLTP statements
on a local file, which is all the services do (no statement spans a network call). A WAL
checkpoint's fsync can block for a few milliseconds now and then.
"""

from __future__ import annotations

import sqlite3
from typing import Any


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


def inline_creator(path: str):
    """An ``async_creator`` for ``create_async_engine("sqlite+aiosqlite:///...")``."""

    async def connect(*_args: Any, **_kwargs: Any) -> InlineConnection:
        # check_same_thread=False: SQLAlchemy may close a pooled connection from its finaliser;
        # every statement still runs on the event loop's thread.
        return InlineConnection(sqlite3.connect(path, check_same_thread=False))

    return connect

"""SQLite storage of caught messages.

The same code path serves a file (mail survives a restart) and ``:memory:``.
Calls are synchronous on the event loop on purpose: each is a single small
statement, far cheaper than the thread hop an async wrapper would add.
"""

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    -- AUTOINCREMENT: ids are never reused after a clear, so a stale id held
    -- by a test can never silently point at a newer message.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT,
    mail_from   TEXT NOT NULL,
    rcpt_to     TEXT NOT NULL,  -- JSON list of envelope recipients
    subject     TEXT,
    text        TEXT,
    headers     TEXT NOT NULL,  -- JSON object
    received_at TEXT NOT NULL,
    raw         BLOB NOT NULL
);
"""

_COLUMNS = "id, message_id, mail_from, rcpt_to, subject, text, headers, received_at"


def _row_to_dict(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["rcpt_to"] = json.loads(item["rcpt_to"])
    item["headers"] = json.loads(item["headers"])
    return item


class MailStore:
    def __init__(self, path: str | None = None) -> None:
        self._db = sqlite3.connect(path or ":memory:")
        self._db.row_factory = sqlite3.Row
        # WAL lets a human poke at the file with the sqlite3 CLI while we run. NORMAL: a commit
        # survives the process being killed, only not the machine losing power, and costs no fsync
        # (FULL fsynced every message on the event loop).
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add(
        self,
        *,
        message_id: str | None,
        mail_from: str,
        rcpt_to: list[str],
        subject: str | None,
        text: str | None,
        headers: dict[str, str],
        received_at: str,
        raw: bytes,
    ) -> int:
        with self._db:
            cur = self._db.execute(
                "INSERT INTO messages (message_id, mail_from, rcpt_to, subject, text,"
                " headers, received_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message_id,
                    mail_from,
                    json.dumps(rcpt_to),
                    subject,
                    text,
                    json.dumps(headers),
                    received_at,
                    raw,
                ),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def find(
        self,
        *,
        to: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        """Return one page of matching messages and the total number matching."""
        where: list[str] = []
        args: list[Any] = []
        if to:
            where.append("EXISTS (SELECT 1 FROM json_each(messages.rcpt_to) WHERE lower(value) = lower(?))")
            args.append(to)
        for name, value in headers:
            # Header names are case-insensitive (RFC 5322), values are exact.
            where.append("EXISTS (SELECT 1 FROM json_each(messages.headers) WHERE lower(key) = lower(?) AND value = ?)")
            args += [name, value]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        total = self._db.execute(f"SELECT count(*) FROM messages {clause}", args).fetchone()[0]
        order = "DESC" if newest_first else "ASC"
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages {clause} ORDER BY id {order} LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [_row_to_dict(row) for row in rows], total

    def get(self, message_id: int) -> dict[str, Any] | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
        return None if row is None else _row_to_dict(row)

    def raw(self, message_id: int) -> bytes | None:
        row = self._db.execute("SELECT raw FROM messages WHERE id = ?", (message_id,)).fetchone()
        return None if row is None else row[0]

    def clear(self) -> None:
        with self._db:
            self._db.execute("DELETE FROM messages")

    def close(self) -> None:
        self._db.close()

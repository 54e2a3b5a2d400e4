"""The span store: one SQLite file (WAL, mode 0600), bounded in age and in size.

The class is synchronous and owns one connection; the app calls it from a single thread of its
own (app.py), so writes never contend and a large batch or a prune never blocks the event loop
that answers exporters.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id        TEXT NOT NULL,     -- 32 hex digits
    span_id         TEXT NOT NULL,     -- 16 hex digits
    parent_span_id  TEXT,              -- NULL for a root span
    service         TEXT NOT NULL,     -- the resource's service.name
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,     -- server, client, internal, producer, consumer, unspecified
    start_ns        INTEGER NOT NULL,
    end_ns          INTEGER NOT NULL,
    duration_ms     REAL NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'error', 'unset')),
    status_message  TEXT NOT NULL,
    attributes      TEXT NOT NULL,     -- JSON object
    events          TEXT NOT NULL,     -- JSON list of {name, time_ns, attributes}
    order_id        TEXT,              -- the span attribute microshop.order.id
    weight          REAL NOT NULL DEFAULT 1,  -- how many spans it stands for (sampling, its trace state)
    -- An exporter retries a batch it got no answer for: a span already kept is ignored. Also the
    -- index by trace (its first column).
    UNIQUE (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_ns);
CREATE INDEX IF NOT EXISTS spans_by_service ON spans (service, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_order ON spans (order_id) WHERE order_id IS NOT NULL;
"""

COLUMNS = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns", "duration_ms",
           "status", "status_message", "attributes", "events", "order_id", "weight")
_JSON_COLUMNS = ("attributes", "events")
_INSERT = (f"INSERT OR IGNORE INTO spans ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join(':' + column for column in COLUMNS)})")


class SpanStore:
    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            _create_private(Path(path))
        self._db = sqlite3.connect(path)
        self._db.row_factory = sqlite3.Row
        # WAL: a reader (a human with the sqlite3 shell, a console query) never waits for a write.
        self._db.execute("PRAGMA journal_mode=WAL")
        # Losing the last spans to a power cut is acceptable for telemetry; an fsync per batch is not.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        if "weight" not in {row[1] for row in self._db.execute("PRAGMA table_info(spans)")}:
            # A store an older receiver made: its spans were all kept, each standing for itself.
            self._db.execute("ALTER TABLE spans ADD COLUMN weight REAL NOT NULL DEFAULT 1")

    def add(self, rows: list[dict[str, Any]]) -> int:
        """Keep the spans; return how many were new (a span already kept is ignored)."""
        # A row that says no weight stands for itself.
        encoded = [{"weight": 1.0, **row, **{column: json.dumps(row[column]) for column in _JSON_COLUMNS}}
                   for row in rows]
        with self._db:
            before = self._db.total_changes
            self._db.executemany(_INSERT, encoded)
            return self._db.total_changes - before

    def prune(self, now_ns: int, retention_seconds: float, max_spans: int) -> int:
        """Drop the spans that started more than ``retention_seconds`` before ``now_ns``, then the
        oldest beyond ``max_spans``; return how many went."""
        with self._db:
            cutoff = now_ns - int(retention_seconds * 1e9)
            removed = self._db.execute("DELETE FROM spans WHERE start_ns < ?", (cutoff,)).rowcount
            excess = self.count() - max_spans
            if excess > 0:
                removed += self._db.execute(
                    "DELETE FROM spans WHERE rowid IN (SELECT rowid FROM spans ORDER BY start_ns LIMIT ?)", (excess,)
                ).rowcount
        return removed

    def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM spans").fetchone()[0]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of a trace, in the order they started."""
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM spans WHERE trace_id = ? ORDER BY start_ns, rowid", (trace_id.lower(),)
        ).fetchall()
        return [_decoded(row) for row in rows]

    def spans_since(self, start_ns: int, limit: int = 200_000) -> list[dict[str, Any]]:
        """The spans that started at or after ``start_ns``, at most ``limit`` (the newest)."""
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM spans WHERE start_ns >= ? ORDER BY start_ns DESC LIMIT ?",
            (start_ns, limit),
        ).fetchall()
        return [_decoded(row) for row in rows]

    def order_spans(self, order_id: str, name_prefix: str = "") -> list[dict[str, Any]]:
        """The spans naming this order (``microshop.order.id``) whose name starts so, oldest first."""
        rows = self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM spans WHERE order_id = ? AND substr(name, 1, ?) = ? "
            "ORDER BY start_ns, rowid",
            (order_id, len(name_prefix), name_prefix),
        ).fetchall()
        return [_decoded(row) for row in rows]

    def traces(self, *, order_id: str | None = None, trace_id: str | None = None, service: str | None = None,
               error: bool | None = None, min_duration_ms: float | None = None,
               limit: int = 50) -> list[dict[str, Any]]:
        """Summaries of the traces that match, newest first. ``order_id`` and ``service`` match a
        trace that has at least one such span; ``error`` one that has (or has no) failed span."""
        span_filters: list[str] = []
        args: list[Any] = []
        for column, value in (("order_id", order_id), ("trace_id", trace_id and trace_id.lower()),
                              ("service", service)):
            if value is not None:
                span_filters.append(f"{column} = ?")
                args.append(value)
        trace_filters: list[str] = []
        if error is not None:
            # The aggregates spelled out: in HAVING, start_ns would name the column, not the alias.
            trace_filters.append("max(status = 'error') = ?")
            args.append(int(error))
        if min_duration_ms is not None:
            trace_filters.append("(max(end_ns) - min(start_ns)) / 1e6 >= ?")
            args.append(min_duration_ms)
        matching = (f"WHERE trace_id IN (SELECT trace_id FROM spans WHERE {' AND '.join(span_filters)})"
                    if span_filters else "")
        having = f"HAVING {' AND '.join(trace_filters)}" if trace_filters else ""
        rows = self._db.execute(
            f"""
            WITH summary AS (
                SELECT trace_id, min(start_ns) AS start_ns, max(end_ns) AS end_ns, count(*) AS span_count,
                       max(status = 'error') AS error, json_group_array(DISTINCT service) AS services
                FROM spans {matching} GROUP BY trace_id {having}
                ORDER BY start_ns DESC LIMIT ?
            )
            SELECT summary.*, root.name AS root_name, root.service AS root_service
            FROM summary JOIN spans AS root ON root.rowid = (
                -- the root: a span without a parent, else (its root not received yet) the earliest
                SELECT rowid FROM spans WHERE trace_id = summary.trace_id
                ORDER BY parent_span_id IS NULL DESC, start_ns LIMIT 1)
            ORDER BY summary.start_ns DESC
            """,
            [*args, limit],
        ).fetchall()
        return [
            {
                "trace_id": row["trace_id"],
                "root_name": row["root_name"],
                "root_service": row["root_service"],
                "start_ns": row["start_ns"],
                "duration_ms": max(0, row["end_ns"] - row["start_ns"]) / 1e6,
                "span_count": row["span_count"],
                "services": sorted(json.loads(row["services"])),
                "error": bool(row["error"]),
            }
            for row in rows
        ]

    def close(self) -> None:
        self._db.close()


def _decoded(row: sqlite3.Row) -> dict[str, Any]:
    span = dict(row)
    for column in _JSON_COLUMNS:
        span[column] = json.loads(span[column])
    return span


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (span attributes may name customers);
    SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)

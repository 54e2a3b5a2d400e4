"""The read model: DuckDB tables projected from events, reached through one worker thread.

DuckDB is synchronous and admits one writer, so every call runs on a single dedicated thread:
the event loop never blocks, and statements from the consumer, a rebuild and HTTP reads never
interleave (each method below is one job on that thread, so a read sees a consistent model).

The schema is not migrated: it is a projection of the event stream. ``meta.schema_version``
records which layout the file holds; when it differs from ``SCHEMA_VERSION`` (or is missing),
``open`` drops every table and the caller replays the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import astuple
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import structlog

from microshop_chassis.clock import utcnow
from microshop_chassis.contracts import EventType
from microshop_chassis.events import Event

from .domain import (
    ORDER_EVENTS,
    PAYMENT_EVENTS,
    SALE_STATUS,
    SCHEMA_VERSION,
    OrderRecord,
    OrderStatus,
    PaymentRecord,
    PaymentStatus,
    Sales,
    SkuSales,
    apply_order_event,
    apply_payment_event,
)
from .schemas import OrderEventData, PaymentEventData

log = structlog.get_logger("microshop.reports.store")

T = TypeVar("T")
ParsedEvent = tuple[Event, OrderEventData | PaymentEventData | None]

# The model's tables, column by column in the order of domain.OrderRecord / PaymentRecord.
# A rebuild fills "fresh_"-prefixed copies of them, then renames those over these.
MODEL: dict[str, dict[str, str]] = {
    "orders": {
        "order_id": "VARCHAR PRIMARY KEY", "customer_id": "VARCHAR NOT NULL", "status": "VARCHAR NOT NULL",
        "total_cents": "BIGINT NOT NULL", "currency": "VARCHAR NOT NULL", "placed_at": "TIMESTAMPTZ",
        "confirmed_at": "TIMESTAMPTZ", "rejected_at": "TIMESTAMPTZ", "cancelled_at": "TIMESTAMPTZ",
    },
    "order_lines": {
        "order_id": "VARCHAR NOT NULL", "sku": "VARCHAR NOT NULL", "quantity": "INTEGER NOT NULL",
        "unit_price_cents": "BIGINT NOT NULL",
    },
    "payments": {
        "payment_id": "VARCHAR PRIMARY KEY", "order_id": "VARCHAR NOT NULL", "amount_cents": "BIGINT NOT NULL",
        "currency": "VARCHAR NOT NULL", "status": "VARCHAR NOT NULL",
    },
    "processed_events": {
        "event_id": "VARCHAR PRIMARY KEY", "event_type": "VARCHAR NOT NULL", "occurred_at": "TIMESTAMPTZ NOT NULL",
        "applied_at": "TIMESTAMPTZ NOT NULL",
    },
}
LIVE = ""
FRESH = "fresh_"


def _create_model_tables(conn: duckdb.DuckDBPyConnection, prefix: str) -> None:
    for table, columns in MODEL.items():
        conn.execute(f"CREATE TABLE {prefix}{table} ({', '.join(f'{c} {d}' for c, d in columns.items())})")


def _insert(conn, prefix: str, table: str, rows: list[tuple], *, verb: str = "INSERT", tail: str = "") -> list:
    """Insert rows in one statement: each column travels as one list parameter, unnested by DuckDB
    (a statement costs ~0.5 ms whatever its size, so rows go in bulk)."""
    if not rows:
        return []
    columns = MODEL[table].values()
    selects = ", ".join(f"unnest(${i}::{ddl.split()[0]}[])" for i, ddl in enumerate(columns, start=1))
    values = [[v.value if isinstance(v, StrEnum) else v for v in column] for column in zip(*rows, strict=True)]
    return conn.execute(f"{verb} INTO {prefix}{table} SELECT {selects} {tail}", values).fetchall()


def _apply_batch(conn: duckdb.DuckDBPyConnection, prefix: str, batch: list[ParsedEvent]) -> int:
    """Apply events, in order, to the tables named with ``prefix``, inside the caller's transaction.
    Returns how many were new: an event id seen before (a redelivery) changes nothing.

    Whatever the batch size, it is a handful of statements: record the ids (which also finds the
    new ones), read the rows the new events touch, fold the events into them in Python with the
    domain's rules, write the rows back.
    """
    unique, batch_ids = [], set()  # an event twice in one batch: the first one counts
    for event, data in batch:
        if event.id not in batch_ids:
            batch_ids.add(event.id)
            unique.append((event, data))
    new_ids = {row[0] for row in _insert(
        conn, prefix, "processed_events",
        [(event.id, event.type, event.occurred_at, utcnow()) for event, _ in unique],
        tail="ON CONFLICT DO NOTHING RETURNING event_id",
    )}
    new = [(event, data) for event, data in unique if event.id in new_ids]
    order_ids = list({data.order_id for _, data in new if isinstance(data, OrderEventData)})
    payment_ids = list({data.payment_id for _, data in new if isinstance(data, PaymentEventData)})
    orders = _load_orders(conn, prefix, order_ids) if order_ids else {}
    payments = _load_payments(conn, prefix, payment_ids) if payment_ids else {}
    with_lines = _load_ids_with_lines(conn, prefix, order_ids) if order_ids else set()

    new_lines: list[tuple] = []
    for event, data in new:
        if isinstance(data, OrderEventData):
            orders[data.order_id] = apply_order_event(
                orders.get(data.order_id), ORDER_EVENTS[EventType(event.type)], event.occurred_at,
                order_id=data.order_id, customer_id=data.customer_id, total_cents=data.total_cents,
                currency=data.currency,
            )
            # Every order event carries the order's lines; the first one seen writes them.
            if data.order_id not in with_lines:
                with_lines.add(data.order_id)
                new_lines += [(data.order_id, i.sku, i.quantity, i.unit_price_cents) for i in data.items]
        elif isinstance(data, PaymentEventData):
            payments[data.payment_id] = apply_payment_event(
                payments.get(data.payment_id), PAYMENT_EVENTS[EventType(event.type)], payment_id=data.payment_id,
                order_id=data.order_id, amount_cents=data.amount_cents, currency=data.currency,
            )
    touched_orders = [astuple(orders[order_id]) for order_id in order_ids]
    touched_payments = [astuple(payments[payment_id]) for payment_id in payment_ids]
    _insert(conn, prefix, "orders", touched_orders, verb="INSERT OR REPLACE")
    _insert(conn, prefix, "payments", touched_payments, verb="INSERT OR REPLACE")
    _insert(conn, prefix, "order_lines", new_lines)
    return len(new)


def _load_orders(conn, prefix: str, ids: list[str]) -> dict[str, OrderRecord]:
    rows = conn.execute(f"SELECT * FROM {prefix}orders WHERE order_id = ANY($1::VARCHAR[])", [ids]).fetchall()
    return {row[0]: OrderRecord(*row[:2], OrderStatus(row[2]), *row[3:]) for row in rows}


def _load_payments(conn, prefix: str, ids: list[str]) -> dict[str, PaymentRecord]:
    rows = conn.execute(f"SELECT * FROM {prefix}payments WHERE payment_id = ANY($1::VARCHAR[])", [ids]).fetchall()
    return {row[0]: PaymentRecord(*row[:4], PaymentStatus(row[4])) for row in rows}


def _load_ids_with_lines(conn, prefix: str, ids: list[str]) -> set[str]:
    rows = conn.execute(
        f"SELECT DISTINCT order_id FROM {prefix}order_lines WHERE order_id = ANY($1::VARCHAR[])", [ids]
    ).fetchall()
    return {row[0] for row in rows}


class ReportStore:
    def __init__(self, path: Path | str, *, memory_limit: str = "64MB") -> None:
        """``path`` is the DuckDB file, or ":memory:" for a model that lives as long as the store."""
        self.path = path
        self.memory_limit = memory_limit
        # One thread, so DuckDB calls never run concurrently and queue in order (FIFO).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duckdb")
        self._conn: duckdb.DuckDBPyConnection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = self._conn
        assert conn is not None, "store not open"
        conn.begin()
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> bool:
        """Open the file; True when the model is empty and must be replayed (a new file, or one
        written by another SCHEMA_VERSION, whose tables are dropped here)."""
        return await self._run(self._open)

    def _open(self) -> bool:
        # Small and single-threaded by design: reports is one of many processes on a small host.
        # The allocator's background thread hands freed memory back to the OS: measured, it keeps
        # the process ~20-40 MB smaller after a replay.
        self._conn = duckdb.connect(
            str(self.path),
            config={"memory_limit": self.memory_limit, "threads": 1, "allocator_background_threads": True},
        )
        found = self._schema_version()
        if found == SCHEMA_VERSION:
            return False
        log.info("read_model_reset", path=str(self.path), file_version=found, code_version=SCHEMA_VERSION)
        with self._transaction() as conn:
            for (table,) in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
            ).fetchall():
                conn.execute(f'DROP TABLE "{table}"')
            conn.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            _create_model_tables(conn, LIVE)
        return True

    def _schema_version(self) -> int | None:
        assert self._conn is not None
        has_meta = self._conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'meta'"
        ).fetchone()[0]
        if not has_meta:
            return None
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._conn.close)  # closing checkpoints the WAL into the file
            self._conn = None
        self._worker.shutdown(wait=True)

    async def ping(self) -> None:
        await self._run(lambda: self._conn.execute("SELECT 1").fetchone())

    # --- live events --------------------------------------------------------------------------

    async def apply(self, event: Event, data: Any) -> bool:
        """Apply one event in its own transaction with its processed_events row; False if seen."""
        return await self._run(self._apply_live, event, data)

    def _apply_live(self, event: Event, data: Any) -> bool:
        return self._apply_many([(event, data)]) == 1

    async def apply_many(self, batch: list[ParsedEvent]) -> int:
        """Apply a fetched batch of live events in one transaction; return how many were new."""
        return await self._run(self._apply_many, batch)

    def _apply_many(self, batch: list[ParsedEvent]) -> int:
        with self._transaction() as conn:
            return _apply_batch(conn, LIVE, batch)

    # --- rebuild: fill fresh tables, then swap them in ----------------------------------------

    async def begin_fresh(self) -> None:
        await self._run(self._begin_fresh)

    def _begin_fresh(self) -> None:
        with self._transaction() as conn:
            self._drop_fresh(conn)
            _create_model_tables(conn, FRESH)

    async def apply_fresh(self, batch: list[ParsedEvent]) -> int:
        """Apply a batch of replayed events to the fresh tables in one transaction; return how many
        changed the model."""
        return await self._run(self._apply_fresh, batch)

    def _apply_fresh(self, batch: list[ParsedEvent]) -> int:
        with self._transaction() as conn:
            return _apply_batch(conn, FRESH, batch)

    async def swap_in_fresh(self) -> None:
        """Replace the live model by the fresh one and stamp the schema version, atomically."""
        await self._run(self._swap_in_fresh)

    def _swap_in_fresh(self) -> None:
        with self._transaction() as conn:
            for table in MODEL:
                conn.execute(f"DROP TABLE {table}")
                conn.execute(f"ALTER TABLE {FRESH}{table} RENAME TO {table}")
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [str(SCHEMA_VERSION)],
            )
        self._conn.execute("CHECKPOINT")  # give the dropped tables' blocks back now

    async def discard_fresh(self) -> None:
        await self._run(self._discard_fresh)

    def _discard_fresh(self) -> None:
        with self._transaction() as conn:
            self._drop_fresh(conn)

    @staticmethod
    def _drop_fresh(conn: duckdb.DuckDBPyConnection) -> None:
        for table in MODEL:
            conn.execute(f"DROP TABLE IF EXISTS {FRESH}{table}")

    # --- reads --------------------------------------------------------------------------------

    async def sales(self) -> Sales:
        return await self._run(self._sales)

    def _sales(self) -> Sales:
        conn = self._conn
        sale = SALE_STATUS.value
        confirmed, revenue, placed, rejected, cancelled = conn.execute(
            """SELECT count(*) FILTER (WHERE status = ?),
                      coalesce(sum(total_cents) FILTER (WHERE status = ?), 0),
                      count(*) FILTER (WHERE status = ?),
                      count(*) FILTER (WHERE status = ?),
                      count(*) FILTER (WHERE status = ?)
               FROM orders""",
            [sale, sale, OrderStatus.PLACED.value, OrderStatus.REJECTED.value, OrderStatus.CANCELLED.value],
        ).fetchone()
        products = conn.execute(
            """SELECT line.sku, sum(line.quantity) AS units, sum(line.quantity * line.unit_price_cents) AS revenue
               FROM order_lines line JOIN orders USING (order_id)
               WHERE orders.status = ?
               GROUP BY line.sku
               ORDER BY revenue DESC, line.sku""",
            [sale],
        ).fetchall()
        captured, refunded = conn.execute(
            "SELECT coalesce(sum(amount_cents), 0), coalesce(sum(amount_cents) FILTER (WHERE status = ?), 0) "
            "FROM payments",
            [PaymentStatus.REFUNDED.value],
        ).fetchone()
        return Sales(
            orders_confirmed=confirmed,
            revenue_cents=int(revenue),
            units_sold=sum(int(units) for _, units, _ in products),
            by_product=[SkuSales(sku, int(units), int(sku_revenue)) for sku, units, sku_revenue in products],
            orders_placed=placed,
            orders_rejected=rejected,
            orders_cancelled=cancelled,
            payments_captured_cents=int(captured),
            payments_refunded_cents=int(refunded),
        )

    async def progress(self) -> tuple[int, datetime | None, int | None]:
        """Events applied, when the newest of them occurred, and the model's schema version."""
        return await self._run(self._progress)

    def _progress(self) -> tuple[int, datetime | None, int | None]:
        applied, last_event_at = self._conn.execute(
            "SELECT count(*), max(occurred_at) FROM processed_events"
        ).fetchone()
        return applied, last_event_at, self._schema_version()

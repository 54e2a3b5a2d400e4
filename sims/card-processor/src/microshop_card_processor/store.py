"""SQLite persistence for tokens, charges, refunds and idempotency records.

One code path for both modes: a file path (survives restarts) or ``:memory:``.

The operations are single-row reads/writes on a local file, well under a millisecond, so they are
called directly from the event loop instead of through a thread pool. That also keeps every
check-then-insert free of ``await`` points; the per-key locks in app.py still guard them so the
invariant survives if that ever changes, and the UNIQUE constraints below are the last line of
defence.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .cards import Card

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token      TEXT PRIMARY KEY,
    number     TEXT NOT NULL,  -- full PAN: the PSP is the one system allowed to hold it. No CVC, ever.
    exp_month  INTEGER NOT NULL,
    exp_year   INTEGER NOT NULL,
    brand      TEXT NOT NULL,
    last4      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL,          -- succeeded | declined
    decline_code    TEXT,
    amount_cents    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    token           TEXT NOT NULL REFERENCES tokens(token),
    brand           TEXT NOT NULL,
    last4           TEXT NOT NULL,
    description     TEXT,
    created_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    charge_id       TEXT NOT NULL UNIQUE REFERENCES charges(id),  -- UNIQUE: full refunds only
    amount_cents    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
-- The exact response first given for (scope, key), replayed verbatim for a matching retry.
CREATE TABLE IF NOT EXISTS idempotency (
    scope       TEXT NOT NULL,   -- charges | refunds
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,   -- sha256 of the canonical request body
    status_code INTEGER NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
"""

_CHARGE_SELECT = """
SELECT c.*, r.id IS NOT NULL AS refunded
FROM charges c LEFT JOIN refunds r ON r.charge_id = c.id
"""


class Store:
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, with explicit BEGIN IMMEDIATE where writes must be atomic.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")  # answers "memory" for :memory:, harmless
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- tokens --------------------------------------------------------------------------------

    def add_token(self, token: str, card: Card, created_at: str) -> None:
        self._db.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
            (token, card.number, card.exp_month, card.exp_year, card.brand, card.last4, created_at),
        )

    def get_token(self, token: str) -> sqlite3.Row | None:
        """Internal view including the full number; never serialize this row to a client."""
        return self._db.execute("SELECT * FROM tokens WHERE token = ?", (token,)).fetchone()

    # -- idempotency ---------------------------------------------------------------------------

    def get_idempotent(self, scope: str, key: str) -> sqlite3.Row | None:
        return self._db.execute(
            "SELECT * FROM idempotency WHERE scope = ? AND key = ?", (scope, key)
        ).fetchone()

    def _remember(
        self, db: sqlite3.Connection, scope: str, key: str, fingerprint: str, status: int, body: dict
    ) -> None:
        db.execute(
            "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
            (scope, key, fingerprint, status, json.dumps(body), body["created_at"]),
        )

    # -- charges -------------------------------------------------------------------------------

    def add_charge(self, charge: dict[str, Any], fingerprint: str, status: int) -> None:
        """Insert the charge and its idempotency record atomically."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO charges (id, idempotency_key, status, decline_code, amount_cents, currency,"
                " token, brand, last4, description, created_at)"
                " VALUES (:id, :idempotency_key, :status, :decline_code, :amount_cents, :currency,"
                " :token, :brand, :last4, :description, :created_at)",
                charge,
            )
            self._remember(db, "charges", charge["idempotency_key"], fingerprint, status, charge)

    def get_charge(self, charge_id: str) -> dict[str, Any] | None:
        row = self._db.execute(_CHARGE_SELECT + " WHERE c.id = ?", (charge_id,)).fetchone()
        return _charge(row) if row else None

    def find_charge(self, idempotency_key: str) -> dict[str, Any] | None:
        row = self._db.execute(_CHARGE_SELECT + " WHERE c.idempotency_key = ?", (idempotency_key,)).fetchone()
        return _charge(row) if row else None

    def list_charges(self) -> list[dict[str, Any]]:
        rows = self._db.execute(_CHARGE_SELECT + " ORDER BY c.rowid").fetchall()
        return [_charge(row) for row in rows]

    # -- refunds -------------------------------------------------------------------------------

    def add_refund(self, refund: dict[str, Any], fingerprint: str, status: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO refunds (id, idempotency_key, charge_id, amount_cents, currency, status,"
                " created_at) VALUES (:id, :idempotency_key, :charge_id, :amount_cents, :currency,"
                " :status, :created_at)",
                refund,
            )
            self._remember(db, "refunds", refund["idempotency_key"], fingerprint, status, refund)

    def get_refund(self, refund_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM refunds WHERE id = ?", (refund_id,)).fetchone()
        return dict(row) if row else None

    def find_refund(self, idempotency_key: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT * FROM refunds WHERE idempotency_key = ?", (idempotency_key,)
        ).fetchone()
        return dict(row) if row else None

    def refund_for_charge(self, charge_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM refunds WHERE charge_id = ?", (charge_id,)).fetchone()
        return dict(row) if row else None

    # -- stats ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        row = self._db.execute(
            "SELECT COUNT(*) AS charges,"
            " COALESCE(SUM(status = 'succeeded'), 0) AS captured,"
            " COALESCE(SUM(status = 'declined'), 0) AS declined,"
            " (SELECT COUNT(*) FROM refunds) AS refunds"
            " FROM charges"
        ).fetchone()
        return dict(row)


def _charge(row: sqlite3.Row) -> dict[str, Any]:
    charge = dict(row)
    charge["refunded"] = bool(charge["refunded"])
    return charge

"""Runtime definitions of the tables the chassis keeps in every service's database.

Each service's first migration creates them from these definitions
(``migrations.create_outbox_table`` / ``create_inbox_table``).
"""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa

chassis_metadata = sa.MetaData()

outbox = sa.Table(
    "outbox",
    chassis_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

inbox = sa.Table(
    "inbox",
    chassis_metadata,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
)


def insert_ignoring_duplicates(session_or_conn_dialect: str, table: sa.Table, values: dict):
    """An INSERT that does nothing when the primary key exists (SQLite and PostgreSQL alike)."""
    return insert_or_ignore(session_or_conn_dialect, table).values(**values)


@cache
def insert_or_ignore(dialect: str, table: sa.Table):
    """The same, built once per dialect and table, the row given as parameters at execution:
    ``session.execute(insert_or_ignore(dialect, table), row)``. On a hot path, building a statement
    costs more than running it (docs/performance.md, "Prebuilt statements")."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()

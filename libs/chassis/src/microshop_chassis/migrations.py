"""Helpers for each service's Alembic ``env.py`` and for the tables every service shares.

A service's env.py is three lines: import its metadata and call ``run_alembic(metadata)``.
"""

from __future__ import annotations

import asyncio
import zlib

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.ext.asyncio import create_async_engine


def run_alembic(target_metadata: sa.MetaData) -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, target_metadata))


async def _run_online(url: str, target_metadata: sa.MetaData) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_migrate, target_metadata)
        await connection.commit()
    await engine.dispose()


def _migrate(connection, target_metadata: sa.MetaData) -> None:
    is_postgres = connection.dialect.name == "postgresql"
    if is_postgres:
        # Replicas of one service may start together: one migrates, the others wait.
        lock_id = zlib.crc32(str(connection.engine.url.database).encode())
        connection.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    if is_postgres:
        connection.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})


# --- tables the chassis owns inside every service's database ---------------------------------


def create_outbox_table() -> None:
    """Migration step: the transactional outbox (see outbox.py)."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def create_inbox_table() -> None:
    """Migration step: the idempotent consumer's record of handled events (see inbox.py)."""
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )

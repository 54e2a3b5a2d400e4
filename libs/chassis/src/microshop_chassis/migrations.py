"""Helpers for each service's Alembic ``env.py`` and for the tables every service shares.

A service's env.py is three lines: import its metadata and call ``run_alembic(metadata)``.
"""

from __future__ import annotations

import asyncio
import zlib

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.ext.asyncio import create_async_engine

from .tables import inbox, outbox


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
        # The lock belongs to the session and outlives this transaction. Ended here, the migrations
        # run in a transaction of Alembic's own (which an autocommit_block may step out of).
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    if is_postgres:
        connection.commit()  # the new revision is visible before a waiting replica gets the lock
        connection.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})


# --- tables the chassis owns inside every service's database ---------------------------------


def create_outbox_table() -> None:
    """Migration step: the transactional outbox (see outbox.py), as tables.py defines it."""
    _create(outbox)


def create_inbox_table() -> None:
    """Migration step: the idempotent consumer's record of handled events (see inbox.py)."""
    _create(inbox)


def _create(table: sa.Table) -> None:
    op.create_table(table.name, *(
        sa.Column(column.name, column.type, primary_key=column.primary_key, nullable=column.nullable,
                  unique=column.unique, autoincrement=column.autoincrement)
        for column in table.columns
    ))

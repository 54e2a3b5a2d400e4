"""The database layer on a SQLite file and on PostgreSQL: transactions, UTC timestamps, migrations,
and the chassis' own tables."""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import alembic.command
import microshop_chassis.db as db_module
import pytest
import sqlalchemy as sa
from microshop_chassis.db import Database, UtcDateTime, newest_revision, utcnow
from microshop_chassis.tables import chassis_metadata
from microshop_chassis.testing import create_postgres_database, require_postgres, wait_until
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("text", sa.String(100), nullable=False),
    sa.Column("at", UtcDateTime, nullable=True),
)


@pytest.fixture
async def db(database_url):
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def notes_db(db):
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return db


async def _texts(db: Database) -> list[str]:
    async with db.session() as session:
        return list((await session.execute(sa.select(notes.c.text).order_by(notes.c.id))).scalars())


async def test_transaction_commits_on_success_and_rolls_back_on_error(notes_db):
    async with notes_db.transaction() as session:
        await session.execute(sa.insert(notes).values(text="kept"))
    with pytest.raises(LookupError):
        async with notes_db.transaction() as session:
            await session.execute(sa.insert(notes).values(text="dropped"))
            raise LookupError("the use case failed")
    assert await _texts(notes_db) == ["kept"]
    await notes_db.ping()


async def test_utc_datetime_comes_back_aware_in_utc(notes_db):
    plus_five = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5)))
    naive_utc = datetime(2026, 3, 1, 7, 0, 0)
    async with notes_db.transaction() as session:
        await session.execute(sa.insert(notes).values(text="aware", at=plus_five))
        await session.execute(sa.insert(notes).values(text="naive", at=naive_utc))
        await session.execute(sa.insert(notes).values(text="none", at=None))
    async with notes_db.session() as session:
        rows = dict((await session.execute(sa.select(notes.c.text, notes.c.at))).all())
    aware = rows["aware"]
    assert aware.tzinfo is not None and aware.utcoffset() == timedelta(0)
    assert aware == plus_five  # the same instant
    assert (aware.hour, aware.minute, aware.microsecond) == (7, 30, 123456)
    assert rows["naive"] == naive_utc.replace(tzinfo=UTC)  # stored naive means UTC
    assert rows["none"] is None

    async with notes_db.session() as session:  # comparisons in SQL see the UTC instant too
        later = (await session.execute(
            sa.select(notes.c.text).where(notes.c.at > datetime(2026, 3, 1, 7, 15, tzinfo=UTC))
        )).scalars().all()
    assert later == ["aware"]
    assert utcnow().tzinfo is not None and utcnow().utcoffset() == timedelta(0)


async def test_sqlite_pragmas(sqlite_url):
    db = Database(sqlite_url)
    try:
        assert db.is_sqlite
        async with db.engine.connect() as conn:
            assert (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(sa.text("PRAGMA synchronous"))).scalar() == 1  # NORMAL
            # The loop's own automatic checkpoint is only a backstop: the checkpoint thread does it.
            assert (await conn.execute(sa.text("PRAGMA wal_autocheckpoint"))).scalar() == db_module.WAL_BACKSTOP_PAGES
    finally:
        await db.dispose()


blobs = sa.Table("blobs", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("data", sa.LargeBinary, nullable=False))


async def _write_pages(db: Database, pages: int) -> None:
    """About ``pages`` pages of 4 KiB written to the WAL, a page per commit."""
    async with db.engine.begin() as conn:
        await conn.run_sync(blobs.metadata.create_all)
    for _ in range(pages):
        async with db.transaction() as session:
            await session.execute(sa.insert(blobs).values(data=os.urandom(3000)))


def _wal_pages(sqlite_url: str) -> float:
    wal = Path(sa.make_url(sqlite_url).database + "-wal")
    return wal.stat().st_size / 4096 if wal.exists() else 0


async def test_the_wal_is_checkpointed_by_a_thread_of_its_own(sqlite_url):
    db = Database(sqlite_url, checkpoint_interval=0.05)
    try:
        await _write_pages(db, 20)  # far below the backstop: the loop's connection checkpoints nothing
        checkpointer = db.checkpointer

        async def all_frames_checkpointed() -> bool:
            last = checkpointer.last
            return last is not None and last[0] == 0 and last[1] > 0 and last[1] == last[2]

        await wait_until(all_frames_checkpointed, timeout=10, what="the WAL checkpointed")
        assert checkpointer._thread is not None and checkpointer._thread.is_alive()
    finally:
        await db.dispose()
    assert checkpointer._thread is None  # disposing the database stops it


async def test_the_wal_stays_bounded_when_the_checkpoint_thread_falls_behind(sqlite_url, monkeypatch):
    monkeypatch.setattr(db_module, "WAL_BACKSTOP_PAGES", 50)
    db = Database(sqlite_url, checkpoint_interval=3600)  # the thread never gets to it
    try:
        await _write_pages(db, 400)
        assert db.checkpointer.last is None
        assert _wal_pages(sqlite_url) < 100  # the backstop checkpointed and the WAL started over
    finally:
        await db.dispose()


async def test_what_was_committed_survives_a_kill_with_checkpoints_on_their_thread(sqlite_url):
    """The process is killed (no close, no last checkpoint) while the thread checkpoints: every
    commit that returned is still there at the next open."""
    script = f"""
import asyncio, os, signal, sqlalchemy as sa
from microshop_chassis.db import Database
blobs = sa.Table("blobs", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("data", sa.LargeBinary, nullable=False))
async def main():
    db = Database({sqlite_url!r}, checkpoint_interval=0.01)
    async with db.engine.begin() as conn:
        await conn.run_sync(blobs.metadata.create_all)
    for n in range(1, 301):
        async with db.transaction() as session:
            await session.execute(sa.insert(blobs).values(id=n, data=os.urandom(3000)))
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
asyncio.run(main())
"""
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == -9 and out.decode().strip() == "committed", err.decode()
    db = Database(sqlite_url)
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT count(*), max(id) FROM blobs"))).one() == (300, 300)
    finally:
        await db.dispose()


WIDGETS = """
op.create_table("widgets", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(50)))
create_outbox_table()
create_inbox_table()
"""


async def _revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def test_migrate_applies_then_skips_alembic_when_current(db, make_migrations, monkeypatch):
    location = make_migrations({"0001_widgets.py": WIDGETS})
    assert newest_revision(location) == "0001"
    await db.migrate(location)
    assert await _revision(db) == "0001"
    assert {"widgets", "outbox", "inbox", "alembic_version"} <= await _tables(db)

    real_upgrade = alembic.command.upgrade
    upgrades: list[str] = []

    def refusing_upgrade(config, revision, **kwargs):
        upgrades.append(revision)
        raise AssertionError("Alembic must not run when the schema is current")

    monkeypatch.setattr(alembic.command, "upgrade", refusing_upgrade)
    await db.migrate(location)  # current: returns without Alembic
    assert upgrades == []

    make_migrations({"0002_gadgets.py": 'op.add_column("widgets", sa.Column("colour", sa.String(20)))'})
    with pytest.raises(AssertionError):
        await db.migrate(location)  # behind: Alembic is called
    assert upgrades == ["head"]

    monkeypatch.setattr(alembic.command, "upgrade", real_upgrade)
    await db.migrate(location)
    assert await _revision(db) == "0002"
    async with db.transaction() as session:
        await session.execute(sa.text("INSERT INTO widgets (id, name, colour) VALUES (1, 'w', 'red')"))


def test_newest_revision_reads_numbered_files_only(make_migrations):
    location = make_migrations({"0001_a.py": "", "0002_b.py": "", "0010_c.py": ""})
    versions = make_migrations.root / "migrations" / "versions"
    (versions / "helpers.py").write_text("")
    (versions / "9999_notes.txt").write_text("")
    (versions / "0099-dash.py").write_text("")
    assert newest_revision(location) == "0010"
    for path in versions.glob("0*_*.py"):
        path.unlink()
    assert newest_revision(location) is None


async def test_chassis_tables_match_their_migrations(db, make_migrations):
    """tables.py (what the code uses) and migrations.create_*_table (what creates them) agree."""
    await db.migrate(make_migrations({"0001_chassis.py": "create_outbox_table()\ncreate_inbox_table()"}))
    reflected = sa.MetaData()
    async with db.engine.connect() as conn:
        await conn.run_sync(lambda sync: reflected.reflect(sync, only=["outbox", "inbox"]))
        uniques = await conn.run_sync(lambda sync: sa.inspect(sync).get_unique_constraints("outbox"))
    for name in ("outbox", "inbox"):
        declared, found = chassis_metadata.tables[name], reflected.tables[name]
        assert set(found.columns.keys()) == set(declared.columns.keys())
        for column in declared.columns:
            twin = found.columns[column.name]
            assert twin.primary_key == column.primary_key, column
            assert twin.nullable == column.nullable or column.primary_key, column
            assert getattr(twin.type, "length", None) == getattr(column.type, "length", None), column
            assert twin.type._type_affinity == column.type._type_affinity, column
    assert [u["column_names"] for u in uniques] == [["event_id"]]


async def test_an_older_release_starts_on_the_schema_a_newer_one_expanded(db, make_migrations):
    """A rollback: the code knows revisions up to 0001, the database is at 0002. It runs on it
    (expand-only migrations keep the old code working) instead of stopping at a revision Alembic
    cannot find."""
    location = make_migrations({"0001_widgets.py": WIDGETS,
                                "0002_gadgets.py": 'op.add_column("widgets", sa.Column("colour", sa.String(20)))'})
    await db.migrate(location)
    versions = Path(str(importlib.resources.files(location.partition(":")[0]))) / "migrations" / "versions"
    (versions / "0002_gadgets.py").unlink()  # what the older release has
    assert newest_revision(location) == "0001"
    await db.migrate(location)
    assert await _revision(db) == "0002"


def test_replicas_migrating_together_apply_each_revision_once(make_migrations):
    """Replicas starting together, each its own process, on one PostgreSQL database: one takes the
    advisory lock and migrates, the others then find the schema current. (SQLite has one process
    per database, and Alembic's context is process-wide: so processes, and PostgreSQL only.)"""
    require_postgres()
    url, drop = create_postgres_database()
    location = make_migrations({"0001_widgets.py": WIDGETS,
                                "0002_gadgets.py": 'op.add_column("widgets", sa.Column("colour", sa.String(20)))'})
    root = Path(str(importlib.resources.files(location.partition(":")[0]))).parent
    script = ("import asyncio, sys\nfrom microshop_chassis.db import Database\n"
              "async def main():\n    db = Database(sys.argv[1])\n    await db.migrate(sys.argv[2])\n"
              "    await db.dispose()\nasyncio.run(main())\n")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    try:
        replicas = [subprocess.Popen([sys.executable, "-c", script, url, location], env=environment,
                                     stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [replica.communicate(timeout=60)[1] for replica in replicas]
        assert [replica.returncode for replica in replicas] == [0] * 4, errors
        assert asyncio.run(_revision_at(url)) == "0002"
    finally:
        drop()


async def _revision_at(url: str) -> str | None:
    db = Database(url)
    try:
        return await _revision(db)
    finally:
        await db.dispose()


@pytest.fixture
def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A tracer provider keeping every finished span in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_each_statement_is_a_client_span_in_the_trace_of_the_code_that_ran_it(database_url, traced):
    provider, exporter = traced
    db = Database(database_url, tracer_provider=provider, database_spans="statement")
    try:
        with provider.get_tracer("test").start_as_current_span("the request") as request:
            async with db.transaction() as session:
                await session.execute(sa.text("SELECT 1 AS secret_value"))
    finally:
        await db.dispose()
    [statement] = [span for span in exporter.get_finished_spans() if span.kind.name == "CLIENT"]
    assert statement.parent.span_id == request.get_span_context().span_id
    assert statement.name.startswith("SELECT ")
    assert statement.attributes["db.system.name"] in ("sqlite", "postgresql")
    assert statement.attributes["db.operation.name"] == "SELECT"


async def test_by_default_a_transaction_is_one_client_span(database_url, traced):
    provider, exporter = traced
    db = Database(database_url, tracer_provider=provider)
    try:
        with provider.get_tracer("test").start_as_current_span("the request") as request:
            async with db.transaction() as session:
                await session.execute(sa.text("SELECT 1 AS first_value"))
                await session.execute(sa.text("SELECT 2 AS second_value"))
            async with db.session() as session:
                await session.execute(sa.text("SELECT 3 AS a_read"))
            with pytest.raises(sa.exc.DBAPIError):
                async with db.transaction() as session:
                    await session.execute(sa.text("SELECT no_such_column FROM no_such_table WHERE secret = 'x'"))
    finally:
        await db.dispose()
    committed, read, failed = [span for span in exporter.get_finished_spans() if span.kind.name == "CLIENT"]
    assert committed.name == read.name == failed.name
    assert committed.name.startswith("transaction")
    assert {span.parent.span_id for span in (committed, read, failed)} == {request.get_span_context().span_id}
    assert committed.attributes["db.system.name"] in ("sqlite", "postgresql")
    assert committed.status.is_ok and read.status.is_ok
    assert not failed.status.is_ok
    assert failed.status.description in ("OperationalError", "ProgrammingError")  # its type, never its message
    assert failed.attributes["db.query.summary"] == "SELECT no_such_column FROM no_such_table WHERE secret"


async def test_database_work_outside_any_trace_makes_no_span(database_url, traced):
    provider, exporter = traced
    for mode in ("transaction", "statement"):
        db = Database(database_url, tracer_provider=provider, database_spans=mode)
        try:
            async with db.transaction() as session:  # a background poll: no request, no event
                await session.execute(sa.text("SELECT 1"))
        finally:
            await db.dispose()
    assert exporter.get_finished_spans() == ()


async def test_database_work_in_a_trace_not_sampled_does_not_even_ask_for_a_span(database_url):
    asked: list[str] = []

    class Asked(sampling.Sampler):  # what decides a span whose parent was not sampled
        def should_sample(self, *_args, **kwargs) -> sampling.SamplingResult:
            asked.append(kwargs["name"])
            return sampling.SamplingResult(sampling.Decision.DROP)

        def get_description(self) -> str:
            return "asked"

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampling.ParentBased(
        sampling.ALWAYS_ON, remote_parent_not_sampled=Asked(), local_parent_not_sampled=Asked()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    not_sampled = NonRecordingSpan(SpanContext(trace_id=0xAB, span_id=0xCD, is_remote=True, trace_flags=TraceFlags(0)))
    db = Database(database_url, tracer_provider=provider)
    try:
        with provider.get_tracer("test").start_as_current_span("the request", context=set_span_in_context(not_sampled)):
            async with db.transaction() as session:
                await session.execute(sa.text("SELECT 1"))
    finally:
        await db.dispose()
    assert asked == ["the request"] and exporter.get_finished_spans() == ()


async def test_no_database_spans_when_they_are_off(database_url, traced):
    provider, exporter = traced
    db = Database(database_url, tracer_provider=provider, database_spans="off")
    try:
        with provider.get_tracer("test").start_as_current_span("the request"):
            async with db.transaction() as session:
                await session.execute(sa.text("SELECT 1"))
    finally:
        await db.dispose()
    assert [span.name for span in exporter.get_finished_spans()] == ["the request"]


async def test_units_of_work_take_turns_even_when_one_waits_inside(notes_db):
    # One connection on SQLite: a unit that waits inside must not let another unit's statements,
    # or a readiness ping, into its transaction; each gets its turn and its own outcome.
    inside, go_on = asyncio.Event(), asyncio.Event()

    async def failing_unit():
        async with notes_db.transaction() as session:
            await session.execute(sa.insert(notes).values(text="rolled back"))
            inside.set()
            await go_on.wait()
            raise LookupError("the use case failed")

    async def kept_unit():
        async with notes_db.transaction() as session:
            await session.execute(sa.insert(notes).values(text="kept"))

    first = asyncio.create_task(failing_unit())
    await inside.wait()
    others = [asyncio.create_task(kept_unit()), asyncio.create_task(notes_db.ping())]
    await asyncio.sleep(0)  # let them start and reach the database (or their turn)
    go_on.set()
    with pytest.raises(LookupError):
        await first
    await asyncio.gather(*others)
    assert await _texts(notes_db) == ["kept"]

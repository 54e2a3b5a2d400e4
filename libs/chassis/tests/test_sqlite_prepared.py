"""Statements used again and again run straight on SQLite's connection (sqlite_prepared.py): the same
rows, types, errors and transactions as through SQLAlchemy's Session, which the rest still uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from microshop_chassis.db import Database, UtcDateTime
from microshop_chassis.sqlite_prepared import RowsResult, WriteResult
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped

metadata = sa.MetaData()
items = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("price_cents", sa.Integer, nullable=False),
    sa.Column("at", UtcDateTime(refuse_naive=True), nullable=True),
    sa.Column("stamped", sa.String(20), nullable=False, default="python-side"),
)

INSERT = sa.insert(items)
BY_NAME = sa.select(items.c.id, items.c.name, items.c.price_cents, items.c.at.label("when")).where(
    items.c.name == sa.bindparam("name"))
CHEAP = sa.select(items.c.name).where(items.c.price_cents < 1000).order_by(items.c.name)  # a constant of its own
REPRICE = sa.update(items).where(items.c.name == sa.bindparam("item"))
REPRICE_RETURNING = (sa.update(items).where(items.c.name == sa.bindparam("item"))
                     .values(price_cents=sa.bindparam("price")).returning(items.c.id, items.c.at))
BY_NAMES = sa.select(items.c.name).where(items.c.name.in_(sa.bindparam("names", expanding=True)))


class Base(DeclarativeBase):
    metadata = metadata


class Item(Base):
    __table__ = items
    id: Mapped[int]
    name: Mapped[str]
    price_cents: Mapped[int]


@pytest.fixture
async def db(sqlite_url):
    database = Database(sqlite_url)
    async with database.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield database
    await database.dispose()


def _row(name: str, price: int, at: datetime | None = None) -> dict:
    return {"name": name, "price_cents": price, "at": at, "stamped": "given"}


async def _run_twice(db: Database, statement, params):
    """The first sighting goes through the Session; the second runs prepared."""
    async with db.session() as session:
        first = await session.execute(statement, params)
        first_rows = list(first) if isinstance(first, sa.CursorResult) and first.returns_rows else None
    async with db.session() as session:
        second = await session.execute(statement, params)
    return first, first_rows, second


async def test_a_statement_seen_twice_runs_prepared_and_answers_as_the_session_did(db):
    at = datetime(2026, 12, 6, 21, 0, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with db.transaction() as session:
        await session.execute(INSERT, [_row("apple", 250, at), _row("melon", 1200)])

    first, first_rows, second = await _run_twice(db, BY_NAME, {"name": "apple"})
    assert isinstance(first, sa.CursorResult)  # through SQLAlchemy's engine
    assert isinstance(second, RowsResult)
    row = second.one()
    assert tuple(row) == tuple(first_rows[0])
    assert row.when == at and row.when.tzinfo is UTC  # the type's result processing ran
    assert row._mapping["price_cents"] == 250 and row.name == "apple"

    _, _, cheap = await _run_twice(db, CHEAP, None)
    assert cheap.scalars().all() == ["apple"]  # the statement's own constant (1000) was bound


async def test_writes_run_prepared_count_their_rows_and_commit_with_the_unit_of_work(db):
    async with db.transaction() as session:
        await session.execute(INSERT, [_row("apple", 250)])
        await session.execute(INSERT, [_row("pear", 300)])  # the second sighting: prepared, executemany
    at = datetime(2026, 12, 6, tzinfo=UTC)
    for _ in range(2):
        async with db.transaction() as session:
            moved = await session.execute(REPRICE, {"item": "pear", "price_cents": 310, "at": at})
    assert isinstance(moved, WriteResult) and moved.rowcount == 1
    async with db.transaction() as session:
        nothing = await session.execute(REPRICE, {"item": "no such item", "price_cents": 1})
    assert nothing.rowcount == 0
    async with db.session() as session:
        rows = (await session.execute(sa.select(items.c.name, items.c.price_cents, items.c.at)
                                      .order_by(items.c.name))).all()
    assert [tuple(row) for row in rows] == [("apple", 250, None), ("pear", 310, at)]


async def test_an_update_returning_its_rows_runs_prepared(db):
    at = datetime(2026, 12, 6, tzinfo=UTC)
    async with db.transaction() as session:
        await session.execute(INSERT, [_row("apple", 250, at), _row("pear", 300)])
    for price in (260, 270):
        async with db.transaction() as session:
            moved = await session.execute(REPRICE_RETURNING, {"item": "apple", "price": price})
            row = moved.one()
    assert isinstance(moved, RowsResult)
    assert moved.rowcount == 1  # counted from the rows (through SQLAlchemy, sqlite3 says 0 until fetched)
    assert row.at == at and row.at.tzinfo is UTC
    async with db.transaction() as session:
        nothing = await session.execute(REPRICE_RETURNING, {"item": "no such item", "price": 1})
        assert nothing.rowcount == 0 and nothing.first() is None
    async with db.session() as session:
        assert (await session.execute(BY_NAME, {"name": "apple"})).one().price_cents == 270


async def test_a_list_parameter_runs_prepared_whatever_its_length(db):
    async with db.transaction() as session:
        await session.execute(INSERT, [_row(name, 1) for name in ("a", "b", "c")])
    answers = []
    for names in (["a"], ["a"], ["c", "a", "x"], [], ["b", "c"], ["c", "a", "x"]):
        async with db.session() as session:
            result = await session.execute(BY_NAMES, {"names": names})
            answers.append((type(result), sorted(result.scalars())))
    assert answers == [(sa.CursorResult, ["a"]), (RowsResult, ["a"]), (RowsResult, ["a", "c"]), (RowsResult, []),
                       (RowsResult, ["b", "c"]), (RowsResult, ["a", "c"])]


async def test_a_failed_unit_of_work_leaves_nothing_of_its_prepared_writes(db):
    for name in ("a", "b"):  # INSERT seen and prepared
        async with db.transaction() as session:
            await session.execute(INSERT, _row(name, 1))
    with pytest.raises(LookupError):
        async with db.transaction() as session:
            assert isinstance(await session.execute(INSERT, _row("dropped", 1)), WriteResult)
            raise LookupError("the use case failed")
    async with db.session() as session:  # a session that is not committed rolls back
        await session.execute(INSERT, _row("not committed", 1))
    async with db.session() as session:
        names = (await session.execute(sa.select(items.c.name).order_by(items.c.name))).scalars().all()
    assert names == ["a", "b"]


async def test_database_errors_are_sqlalchemys_as_through_the_session(db):
    for name in ("a", "b"):
        async with db.transaction() as session:
            await session.execute(INSERT, _row(name, 1))
    with pytest.raises(IntegrityError) as duplicate:
        async with db.transaction() as session:
            await session.execute(INSERT, _row("a", 2))
    assert "UNIQUE" in str(duplicate.value.orig)
    with pytest.raises(StatementError, match="naive datetime"):
        async with db.transaction() as session:
            await session.execute(INSERT, _row("c", 3, at=datetime(2026, 12, 6)))


async def test_what_needs_sqlalchemy_still_goes_through_the_session(db):
    async with db.transaction() as session:
        for name in ("a", "b"):
            # No "stamped": its Python-side default must run, which only SQLAlchemy does.
            result = await session.execute(INSERT, {"name": name, "price_cents": 1})
            assert isinstance(result, sa.CursorResult)
    orm_query = sa.select(Item).where(Item.name == sa.bindparam("name"))
    for _ in range(2):  # an ORM statement: loaded as objects
        async with db.session() as session:
            item = (await session.execute(orm_query, {"name": "b"})).scalar_one()
    assert isinstance(item, Item) and item.name == "b"
    async with db.session() as session:
        stamps = (await session.execute(sa.select(items.c.stamped))).scalars().all()
    assert stamps == ["python-side", "python-side"]


async def test_orm_work_and_prepared_statements_share_one_transaction(db):
    for name in ("seen", "twice"):
        async with db.transaction() as session:
            await session.execute(INSERT, _row(name, 1))
    with pytest.raises(LookupError):
        async with db.transaction() as session:
            await session.execute(INSERT, _row("prepared", 1))  # straight on the connection
            session.add(Item(name="orm", price_cents=2))  # opens the Session on the same connection
            await session.flush()
            raise LookupError("both go")
    async with db.transaction() as session:
        await session.execute(INSERT, _row("prepared", 1))
        session.add(Item(name="orm", price_cents=2))
        # Once the Session is open, statements go through it, so its autoflush sees them.
        seen = await session.execute(BY_NAME, {"name": "orm"})
        assert isinstance(seen, sa.CursorResult) and seen.one().price_cents == 2
    async with db.session() as session:
        names = (await session.execute(sa.select(items.c.name).order_by(items.c.name))).scalars().all()
    assert names == ["orm", "prepared", "seen", "twice"]


async def test_a_commit_tells_the_commit_hooks_what_the_unit_of_work_noted(db):
    told = []
    db.on_commit(lambda info: told.append(dict(info)))
    async with db.transaction() as session:
        await session.execute(INSERT, _row("a", 1))
        session.info["noted"] = True
    with pytest.raises(LookupError):
        async with db.transaction() as session:
            session.info["rolled back"] = True
            raise LookupError
    async with db.session() as session:  # an explicit commit inside a session counts too
        await session.execute(INSERT, _row("b", 1))
        session.info["explicit"] = True
        await session.commit()
    assert told == [{"noted": True}, {"explicit": True}]


async def test_with_a_span_per_statement_every_statement_goes_through_the_engine(sqlite_url):
    db = Database(sqlite_url, database_spans="statement")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        for name in ("a", "b", "c"):
            async with db.transaction() as session:
                assert isinstance(await session.execute(INSERT, _row(name, 1)), sa.CursorResult)
    finally:
        await db.dispose()

"""The span store on its own: retention by age and by count, duplicates, the order search."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from microshop_telemetry.store import SpanStore

SECOND = 1_000_000_000
NOW = 1_800_000_000 * SECOND


def span(trace: int, number: int, *, start_ns: int, order_id: str | None = None, status: str = "ok",
         parent: int | None = None) -> dict:
    return {
        "trace_id": f"{trace:032x}", "span_id": f"{number:016x}",
        "parent_span_id": None if parent is None else f"{parent:016x}",
        "service": "orders", "name": f"step {number}", "kind": "internal",
        "start_ns": start_ns, "end_ns": start_ns + 5_000_000, "duration_ms": 5.0,
        "status": status, "status_message": "", "attributes": {"n": number}, "events": [], "order_id": order_id,
    }


@pytest.fixture
def store(tmp_path: Path):
    spans = SpanStore(tmp_path / "telemetry" / "spans.db")
    yield spans
    spans.close()


def test_the_database_file_is_readable_by_its_owner_only(tmp_path: Path, store):
    assert stat.S_IMODE((tmp_path / "telemetry" / "spans.db").stat().st_mode) == 0o600


def test_spans_older_than_the_retention_are_pruned(store):
    store.add([span(1, 1, start_ns=NOW - 2 * 3600 * SECOND), span(2, 2, start_ns=NOW - 60 * SECOND)])
    assert store.prune(NOW, retention_seconds=3600, max_spans=100) == 1
    assert store.trace(f"{1:032x}") == []
    assert [kept["span_id"] for kept in store.trace(f"{2:032x}")] == [f"{2:016x}"]


def test_the_oldest_spans_beyond_the_maximum_are_pruned(store):
    store.add([span(number, number, start_ns=NOW - (10 - number) * SECOND) for number in range(10)])
    assert store.prune(NOW, retention_seconds=3600, max_spans=4) == 6
    assert store.count() == 4
    assert [summary["trace_id"] for summary in store.traces()] == [f"{number:032x}" for number in (9, 8, 7, 6)]


def test_a_span_kept_already_is_ignored(store):
    first = span(1, 1, start_ns=NOW)
    assert store.add([first]) == 1
    assert store.add([first, span(1, 2, start_ns=NOW, parent=1)]) == 1
    assert store.count() == 2


def test_an_order_is_found_in_every_trace_that_names_it_newest_first(store):
    checkout = [span(1, 1, start_ns=NOW, order_id="ord-9"), span(1, 2, start_ns=NOW + SECOND, parent=1)]
    cancel = [span(2, 3, start_ns=NOW + 60 * SECOND, order_id="ord-9", status="error")]
    other = [span(3, 4, start_ns=NOW, order_id="ord-10")]
    store.add(checkout + cancel + other)

    found = store.traces(order_id="ord-9")
    assert [summary["trace_id"] for summary in found] == [f"{2:032x}", f"{1:032x}"]
    assert found[1]["span_count"] == 2 and found[1]["root_name"] == "step 1" and found[1]["error"] is False
    assert found[0]["error"] is True


def test_the_order_search_uses_its_index(store):
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT trace_id FROM spans WHERE order_id = ?", ("ord-1",)).fetchall()
    assert any("spans_by_order" in row[-1] for row in plan)


def test_a_trace_whose_root_is_missing_is_summarised_from_its_earliest_span(store):
    store.add([span(1, 2, start_ns=NOW + SECOND, parent=1), span(1, 3, start_ns=NOW + 2 * SECOND, parent=2)])
    assert store.traces()[0]["root_name"] == "step 2"


def test_a_store_an_older_receiver_made_gains_the_weight_column_each_span_standing_for_itself(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the columns before sampling weights
        old.execute("CREATE TABLE spans (trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT, "
                    "service TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, start_ns INTEGER NOT NULL, "
                    "end_ns INTEGER NOT NULL, duration_ms REAL NOT NULL, status TEXT NOT NULL, "
                    "status_message TEXT NOT NULL, attributes TEXT NOT NULL, events TEXT NOT NULL, order_id TEXT, "
                    "UNIQUE (trace_id, span_id))")
        old.execute("INSERT INTO spans VALUES (?, ?, NULL, 'orders', 'old', 'server', 1, 2, 0.0, 'ok', '', '{}', "
                    "'[]', NULL)", (f"{1:032x}", f"{1:016x}"))
    old.close()
    upgraded = SpanStore(path)
    try:
        upgraded.add([{**span(2, 2, start_ns=NOW), "weight": 8.0}])
        assert [found["weight"] for found in upgraded.trace(f"{1:032x}") + upgraded.trace(f"{2:032x}")] == [1.0, 8.0]
    finally:
        upgraded.close()

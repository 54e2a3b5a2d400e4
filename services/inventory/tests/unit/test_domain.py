from datetime import UTC, datetime, timedelta, timezone

import pytest
from microshop_inventory.domain import (
    COMMIT,
    EXPIRE,
    RELEASE,
    RESTOCK,
    ReservationStatus,
    is_tombstone,
    same_items,
)
from microshop_inventory.models import UtcDateTime
from sqlalchemy.dialects import postgresql, sqlite

S = ReservationStatus


@pytest.mark.parametrize(
    ("step", "status", "outcome"),
    [
        (COMMIT, S.HELD, "apply"), (COMMIT, S.COMMITTED, "unchanged"), (COMMIT, S.RESTOCKED, "unchanged"),
        (COMMIT, S.RELEASED, "conflict"), (COMMIT, S.EXPIRED, "conflict"),
        (RELEASE, S.HELD, "apply"), (RELEASE, S.RELEASED, "unchanged"), (RELEASE, S.EXPIRED, "unchanged"),
        (RELEASE, S.COMMITTED, "conflict"), (RELEASE, S.RESTOCKED, "conflict"),
        (RESTOCK, S.COMMITTED, "apply"), (RESTOCK, S.RESTOCKED, "unchanged"),
        (RESTOCK, S.HELD, "conflict"), (RESTOCK, S.RELEASED, "conflict"), (RESTOCK, S.EXPIRED, "conflict"),
    ],
)
def test_each_step_applies_once_repeats_harmlessly_and_refuses_the_rest(step, status, outcome):
    assert step.outcome_for(status) == outcome


def test_only_a_sale_or_a_restock_changes_on_hand_and_only_a_hold_ending_changes_reserved():
    # available = on_hand - reserved: committing keeps it, releasing and expiring raise it.
    assert (COMMIT.on_hand, COMMIT.reserved) == (-1, -1)
    assert (RELEASE.on_hand, RELEASE.reserved) == (EXPIRE.on_hand, EXPIRE.reserved) == (0, -1)
    assert (RESTOCK.on_hand, RESTOCK.reserved) == (1, 0)


def test_sold_units_move_exactly_against_on_hand():
    # on_hand == received_units - sold_units: a step moves sold by minus what it moves on hand.
    assert [(step.name, step.sold) for step in (COMMIT, RELEASE, RESTOCK, EXPIRE)] == [
        ("commit", 1), ("release", 0), ("restock", -1), ("expire", 0)]
    assert all(step.sold == -step.on_hand for step in (COMMIT, RELEASE, RESTOCK, EXPIRE))


def test_items_compare_as_a_set_of_lines():
    assert same_items({"A": 1, "B": 2}, {"B": 2, "A": 1})
    assert not same_items({"A": 1, "B": 2}, {"A": 1})
    assert not same_items({"A": 1}, {"A": 2})


def test_a_tombstone_is_a_released_reservation_without_lines():
    assert is_tombstone(S.RELEASED, {})
    assert not is_tombstone(S.RELEASED, {"A": 1})
    assert not is_tombstone(S.EXPIRED, {})


def test_timestamps_are_stored_as_utc_and_read_back_aware():
    column = UtcDateTime()
    paris = datetime(2026, 3, 1, 13, 30, tzinfo=timezone(timedelta(hours=1)))
    stored = column.process_bind_param(paris, sqlite.dialect())
    assert stored == datetime(2026, 3, 1, 12, 30) and stored.tzinfo is None
    assert column.process_result_value(stored, sqlite.dialect()) == paris
    assert column.process_result_value(stored, sqlite.dialect()).tzinfo == UTC
    assert column.process_bind_param(paris, postgresql.dialect()).utcoffset() == timedelta(0)
    with pytest.raises(ValueError):
        column.process_bind_param(datetime(2026, 3, 1), sqlite.dialect())

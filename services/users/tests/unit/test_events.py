"""The producer end of users' event: its typed model matches its contract in contracts/events,
and the event registration writes validates against it."""

from microshop_chassis.contracts import EventType
from microshop_chassis.testing import assert_event_matches_contract, assert_event_model_matches_contract, outbox_events
from microshop_users.events import UserRegistered


def test_user_registered_matches_its_contract():
    assert_event_model_matches_contract(UserRegistered)


def test_users_publishes_every_users_event_type():
    assert {t for t in EventType if t.source == "users"} == {UserRegistered.event_type}


async def test_the_event_a_registration_writes_is_valid(users):
    await users.register(email="ada@example.com", password="lovelace-1815", name="Ada")
    [event] = await outbox_events(users.db)
    assert_event_matches_contract(event)

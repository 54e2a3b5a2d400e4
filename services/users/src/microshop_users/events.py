"""The event users publishes, as a typed model of its data (contracts/events/UserRegistered.v1)."""

from __future__ import annotations

from microshop_chassis.contracts import EventType
from microshop_chassis.events import EventData

from .domain import Role


class UserRegistered(EventData):
    event_type = EventType.USER_REGISTERED

    user_id: str
    email: str
    name: str
    role: Role

"""The event envelope every event on the broker carries, and the subject naming.

Subjects are ``events.<source>.<Type>``, all in one JetStream stream, so a consumer filters by
producer or by type, and the whole history can be replayed in order.

A producer writes an event from a typed model of its data (``EventData``), whose class names the
event type it is; the model is checked against ``contracts/events/<Type>.v<n>.schema.json`` by
the producer's tests (``testing.assert_event_model_matches_contract``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from .contracts import EventType

STREAM = "MICROSHOP_EVENTS"
SUBJECT_PREFIX = "events"
DEAD_LETTER_PREFIX = "deadletter"
DEAD_LETTER_STREAM = "MICROSHOP_DEADLETTER"


class Event(BaseModel):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    data: dict[str, Any]

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX}.{self.source}.{self.type}"


class EventData(BaseModel):
    """The data of one event type, as its producer writes it. A subclass names its type:
    ``class OrderPlaced(EventData): event_type = EventType.ORDER_PLACED``."""

    event_type: ClassVar[EventType]
    version: ClassVar[int] = 1

    def to_event(self) -> Event:
        return Event(type=self.event_type.value, version=self.version, source=self.event_type.source,
                     data=self.model_dump(mode="json"))


def subject_for(source: str, event_type: str = "*") -> str:
    return f"{SUBJECT_PREFIX}.{source}.{event_type}"


def subjects_of(*event_types: EventType) -> list[str]:
    """The subjects a consumer of these event types filters on."""
    return [subject_for(event_type.source, event_type.value) for event_type in event_types]

"""The event envelope every event on the broker carries, and the subject naming.

Subjects are ``events.<source>.<Type>``, all in one JetStream stream, so a consumer filters by
producer or by type, and the whole history can be replayed in order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

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


def subject_for(source: str, event_type: str = "*") -> str:
    return f"{SUBJECT_PREFIX}.{source}.{event_type}"

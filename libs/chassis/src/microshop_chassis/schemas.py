"""The base of every request body a service takes: unknown fields are refused (a client cannot
set what the API does not offer, such as a role or a price) and values are not coerced (a
quantity is a JSON integer, never ``true`` or ``"2"``).

Strict mode here means Pydantic's strict *Python* mode, because FastAPI validates the parsed JSON
as Python objects: ``int``, ``bool``, ``str``, ``float`` and ``list`` fields behave as in JSON, but
a ``datetime``, ``date``, ``UUID``, ``Decimal`` or ``Enum`` field would refuse the JSON string that
carries it. Such a field opts out with ``Field(strict=False)`` (see ``JsonString`` types below).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

# Types a JSON body carries as strings: lax on purpose (parsed from the ISO / canonical text).
JsonDatetime = Annotated[datetime, Field(strict=False)]
JsonDate = Annotated[date, Field(strict=False)]
JsonUUID = Annotated[UUID, Field(strict=False)]


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

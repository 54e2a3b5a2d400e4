"""The fault log: one JSON line per change to a proxy, so a chaos run can be replayed against its results."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO


class EventLog:
    """Writes ``{"ts", "proxy", "action", "details"}`` lines to every stream given, flushed at once."""

    def __init__(self, streams: Iterable[TextIO] | None = None) -> None:
        self.streams: list[TextIO] = list(streams) if streams is not None else [sys.stdout]

    def emit(self, proxy: str | None, action: str, **details: Any) -> None:
        line = json.dumps(
            {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "proxy": proxy,
                "action": action,
                "details": details,
            }
        )
        for stream in self.streams:
            stream.write(line + "\n")
            stream.flush()

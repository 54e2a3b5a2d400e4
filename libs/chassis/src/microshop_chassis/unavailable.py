"""The one exception every caller of another service handles: the callee could not be reached, did
not answer in time, or was not even tried (circuit open, bulkhead full). Its own module so that
the HTTP client and the resilience guards can both use it without importing each other."""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """The callee could not be reached or did not answer in time: the outcome is unknown."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target} unavailable: {reason}")
        self.target = target
        self.reason = reason

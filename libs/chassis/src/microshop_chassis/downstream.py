"""The one family of exceptions an adapter to another service (or to an outside system) raises
for a technical failure. A business answer (out of stock, declined) is never one of these: the
adapter turns it into a result or a domain error of its own service.

Its own module so that the HTTP client and the resilience guards can both use it without
importing each other.
"""

from __future__ import annotations


class DownstreamError(Exception):
    """A call to another service gave no usable answer: its outcome is unknown."""

    verb = "failed"
    # Answered as a problem (errors.ProblemMap), it tells the caller nothing of the callee.
    problem_members: tuple[str, ...] = ()

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target} {self.verb}: {reason}")
        self.target = target
        self.reason = reason


class ServiceUnavailable(DownstreamError):
    """The callee could not be reached, did not answer in time, or was not even tried (circuit
    open, bulkhead full). ``replica``: the address tried, when one was; ``sent``: False when the
    request certainly never reached it (the connection was refused), so any request may go to
    another replica."""

    verb = "unavailable"
    replica: str | None = None
    sent: bool = True


# 4xx answers that say "not now" rather than "never": the same request may succeed later.
_TRANSIENT_CLIENT_ERRORS = frozenset({401, 408, 425, 429})


class UnexpectedReply(DownstreamError):
    """The callee answered outside the protocol between the two (a 5xx after the retries, a
    problem type the caller does not know). ``title`` is the problem's title, when it sent one."""

    verb = "answered unexpectedly"

    def __init__(self, target: str, status: int, detail: str, *, title: str | None = None) -> None:
        super().__init__(target, f"{status} {detail}")
        self.status = status
        self.title = title

    @property
    def permanent(self) -> bool:
        """A 4xx (but a 401, 408, 425 or 429): the callee refuses the request itself, so repeating
        it can only get the same answer. (A 401 may pass once the token is refreshed or the keys
        rotated; the others say "later".) A 5xx or a timeout leaves the outcome open."""
        return 400 <= self.status < 500 and self.status not in _TRANSIENT_CLIENT_ERRORS

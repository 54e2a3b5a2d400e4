"""Per-request context that must follow a request across awaits and into outgoing calls."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# Absolute deadline (time.monotonic()) of the request being served, when the caller sent one.
deadline_var: ContextVar[float | None] = ContextVar("deadline", default=None)
# The service doing the work (its requests and its background loops): logs name it, which
# matters when several services share one process.
service_var: ContextVar[str | None] = ContextVar("service", default=None)

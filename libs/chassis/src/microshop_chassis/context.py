"""Per-request context that must follow a request across awaits and into outgoing calls."""

from __future__ import annotations

from contextvars import Context, ContextVar, copy_context

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# Absolute deadline (time.monotonic()) of the request being served, when the caller sent one.
# ``ServiceClient`` tells the two ways a call runs out of time apart: cut short by this deadline
# (the caller's doing) or by its own per-call timeout (the callee's).
deadline_var: ContextVar[float | None] = ContextVar("deadline", default=None)
# The service doing the work (its requests and its background loops): logs name it, which
# matters when several services share one process.
service_var: ContextVar[str | None] = ContextVar("service", default=None)

# Default floor of a deadline received in ``X-Request-Timeout``, in seconds (the setting
# ``MICROSHOP_MIN_REQUEST_TIMEOUT``).
MIN_REQUEST_TIMEOUT = 1.0


def outliving_the_request() -> Context:
    """The context for a task a request starts that must go on after it (``asyncio.create_task(...,
    context=outliving_the_request())``): the request id and the trace follow it, the request's
    deadline does not; otherwise the task's calls would be cut short by the client's deadline."""
    context = copy_context()
    context.run(deadline_var.set, None)
    return context

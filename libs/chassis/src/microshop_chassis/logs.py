"""JSON logs, one object per line, each carrying service, trace and request ids.

structlog renders our own events; the standard library's loggers (uvicorn, SQLAlchemy, nats)
go through the same renderer so a service's log is one uniform stream. Logging is configured once
per process (by ``runner.serve``); the service a line belongs to comes from the context the line
is written in (``context.service_var``, set for each request and each background loop).
"""

from __future__ import annotations

import json
import logging
import sys

import pydantic_core
import structlog
from opentelemetry import trace

from .context import request_id_var, service_var


def _add_trace_ids(_logger, _method, event_dict):
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    request_id = request_id_var.get()
    if request_id:
        event_dict["request_id"] = request_id
    return event_dict


def _json_for(stream):
    """The JSON encoder for log lines to ``stream``: pydantic-core's (Rust) where ``stream`` takes
    UTF-8, which halves the cost of a line against ``json.dumps`` (docs/performance.md, "Log
    lines, spans in traces not kept, metric series"); it writes non-ASCII characters as they are,
    where ``json.dumps`` escapes them."""
    if (getattr(stream, "encoding", None) or "").lower().replace("-", "") != "utf8":
        return json.dumps

    def to_json(event_dict, default) -> str:
        return pydantic_core.to_json(event_dict, fallback=default).decode()

    return to_json


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """``service`` names lines written outside any service's context (start-up, shutdown)."""

    def add_service(_logger, _method, event_dict):
        return {"service": service_var.get() or service, **event_dict}

    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        add_service,
    ]
    renderer = (
        structlog.processors.JSONRenderer(serializer=_json_for(sys.stdout))
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # A write and a flush: print()'s extra work is a fifth of a line's cost.
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log would duplicate our request log, which carries more.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("aiosqlite").setLevel("WARNING")

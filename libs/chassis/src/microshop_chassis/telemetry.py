"""OpenTelemetry tracing: one trace across every service and the broker (W3C traceparent).

Propagation is always on. Each service has a tracer provider of its own (its resource names the
service); export is chosen by ``MICROSHOP_TRACES_EXPORTER``: ``none`` (default), ``console``, or
``file`` (JSON lines in ``<data_dir>/traces/<service>.jsonl``, read by tools without a collector).
Parts built without a service (in a test) trace through OpenTelemetry's global provider.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.get_span_context()
            parent = span.parent
            self._file.write(
                json.dumps(
                    {
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_id": format(parent.span_id, "016x") if parent else None,
                        "name": span.name,
                        "kind": span.kind.name,
                        "service": span.resource.attributes.get("service.name"),
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "status": span.status.status_code.name,
                        "attributes": dict(span.attributes or {}),
                    }
                )
                + "\n"
            )
        self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def tracer_provider(service: str, exporter: str = "none", data_dir: Path | None = None) -> TracerProvider:
    """A tracer provider for one service, exporting as ``exporter`` says."""
    # Shut down by its service when it stops (flushing what is batched), not at interpreter exit:
    # a process may build many services over its life (the tests do).
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "file":
        path = (data_dir or Path(".")) / "traces" / f"{service}.jsonl"
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path)))
    return provider


def tracer(name: str = "microshop", provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """A tracer from ``provider``, or from the global provider when there is none."""
    return provider.get_tracer(name) if provider is not None else trace.get_tracer(name)


def inject_headers(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (traceparent, tracestate) into outgoing headers."""
    propagate.inject(headers)
    return headers


def extract_context(headers: Mapping[str, str]):
    return propagate.extract(headers)

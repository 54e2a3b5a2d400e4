"""OpenTelemetry tracing: one trace across every service and the broker (W3C traceparent).

Propagation is always on. Each service has a tracer provider of its own (its resource names the
service). Spans go, each independently of the others:

- over OTLP/HTTP to whatever the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, with the other ``OTEL_EXPORTER_OTLP_*`` variables) names:
  Jaeger, Tempo, any OpenTelemetry collector;
- over OTLP/HTTP to microshop's own receiver at ``MICROSHOP_TELEMETRY_URL`` (the launcher's
  telemetry component: the console and ``microshop trace`` read from it);
- as ``MICROSHOP_TRACES_EXPORTER`` says: ``none`` (default), ``console``, or ``file`` (JSON lines in
  ``<data_dir>/traces/<service>.jsonl``).

Sampling is decided where a trace starts and followed by every span after it (parent-based). By
default a service starts at most about ``MICROSHOP_TRACES_PER_SECOND`` traces a second (5): every
trace while people click through the shop, a share of them under load (RateLimitedSampler below).
The SDK's standard ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, when set, decide instead
(``parentbased_always_on``: every trace). Parts built without a service (in a test) trace through
OpenTelemetry's global provider.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, MutableMapping, Sequence
from contextlib import nullcontext
from pathlib import Path

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import TraceState


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


EMBEDDED_EXPORT_DELAY_MS = 1000


DEFAULT_TRACES_PER_SECOND = 5.0


def tracer_provider(service: str, exporter: str = "none", data_dir: Path | None = None, *,
                    telemetry_url: str = "", instance: str = "",
                    traces_per_second: float = DEFAULT_TRACES_PER_SECOND,
                    sampler: sampling.Sampler | None = None) -> TracerProvider:
    """A tracer provider for one service (``instance``: which replica), sampling and exporting as
    the module docstring says; ``sampler`` instead, when given (a test keeping every trace)."""
    # Shut down by its service when it stops (flushing what is batched), not at interpreter exit:
    # a process may build many services over its life (the tests do).
    attributes = {"service.name": service, **({"service.instance.id": instance} if instance else {})}
    created = Resource.create(attributes)  # with the SDK's defaults and OTEL_RESOURCE_ATTRIBUTES
    follows_parent = sampler is None and not os.environ.get("OTEL_TRACES_SAMPLER")  # set: the SDK reads it
    if follows_parent:
        sampler = sampling.ParentBased(RateLimitedSampler(traces_per_second))
    provider = _TracerProvider(resource=_HashedOnce(created.attributes, created.schema_url), sampler=sampler,
                               shutdown_on_exit=False, follows_parent=follows_parent)
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))  # configured by OTEL_* alone
    if telemetry_url:
        # Headers given (none), so a team's OTEL_EXPORTER_OTLP_HEADERS (its backend's key) stay with its backend.
        # Every second rather than the SDK's five (unless OTEL_BSP_SCHEDULE_DELAY says otherwise): a
        # trace is then in the console a second or two after its request; under load batches fill first.
        provider.add_span_processor(BatchSpanProcessor(
            _otlp_exporter(endpoint=telemetry_url.rstrip("/") + "/v1/traces", headers={}, session=_local_session()),
            schedule_delay_millis=None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") else EMBEDDED_EXPORT_DELAY_MS))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "file":
        path = (data_dir or Path(".")) / "traces" / f"{service}.jsonl"
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path)))
    return provider


# Attributes of microshop's own on spans (what the console and `microshop trace` search by).
ORDER_ID_ATTRIBUTE = "microshop.order.id"
SAGA_STEP_ATTRIBUTE = "microshop.saga.step"
IDEMPOTENCY_KEY_ATTRIBUTE = "microshop.idempotency_key"
PROBLEM_TYPE_ATTRIBUTE = "microshop.problem.type"


def annotate_order(order_id: str) -> None:
    """Name the order the current span (the request's, a saga step's) works on."""
    trace.get_current_span().set_attribute(ORDER_ID_ATTRIBUTE, order_id)


# OpenTelemetry's consistent probability sampling (https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/):
# a trace is kept when the 56 random low bits of its id reach the rejection threshold, and the
# threshold travels in the trace state (``ot=th:...``), so every span says what it stands for.
_RANDOMNESS_BITS = 56
_RANDOMNESS_MASK = (1 << _RANDOMNESS_BITS) - 1


class RateLimitedSampler(sampling.Sampler):
    """Starts at most about ``per_second`` traces a second, and all of them below that rate.

    The arrival rate of new traces is an exponentially weighted average over ``adapt_seconds``;
    the share kept is ``per_second`` over that rate (at most 1), decided consistently from the
    trace id, and written into the trace state so that a backend counts each kept trace for the
    ones it stands for (the console's map does). The same idea as Jaeger's and X-Ray's rate-limited
    samplers and OpenTelemetry Java's ConsistentRateLimitingSampler; the Python SDK has none, so
    it is written here (a few lines). Used as the root sampler of ``ParentBased``: spans with a
    parent follow their parent's decision.
    """

    def __init__(self, per_second: float, adapt_seconds: float = 5.0, clock=time.monotonic) -> None:
        if per_second <= 0 or adapt_seconds <= 0:
            raise ValueError("per_second and adapt_seconds must be positive")
        self.per_second = per_second
        self._adapt_seconds = adapt_seconds
        self._clock = clock
        self._rate = 0.0  # new traces a second, averaged
        self._last = clock()

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> sampling.SamplingResult:
        threshold = self.threshold()
        if trace_id & _RANDOMNESS_MASK < threshold:
            return sampling.SamplingResult(sampling.Decision.DROP)
        # A new trace: no trace state of its own yet (the SDK passes none to a root sampler).
        return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, None,
                                       TraceState([("ot", f"th:{encode_threshold(threshold)}")]))

    def threshold(self) -> int:
        """Count one more new trace; the rejection threshold for it (0: keep every trace)."""
        now = self._clock()
        self._rate = self._rate * math.exp((self._last - now) / self._adapt_seconds) + 1 / self._adapt_seconds
        self._last = now
        kept = min(1.0, self.per_second / self._rate)
        return min(_RANDOMNESS_MASK, round((1 - kept) * (1 << _RANDOMNESS_BITS)))  # at least one id in 2**56

    def get_description(self) -> str:
        return f"RateLimitedSampler{{{self.per_second}/s}}"


def encode_threshold(threshold: int) -> str:
    """The ``th`` value of a rejection threshold: 14 hex digits, trailing zeros dropped."""
    return f"{threshold:014x}".rstrip("0") or "0"


def sampling_weight(trace_state: str) -> float:
    """How many traces a kept one stands for, from its W3C trace state (``ot=th:...``); 1 when the
    trace state says nothing of it."""
    for member in trace_state.split(","):
        key, _, value = member.strip().partition("=")
        if key != "ot":
            continue
        for field in value.split(";"):
            name, _, digits = field.partition(":")
            if name == "th" and 0 < len(digits) <= 14:
                try:
                    threshold = int(digits.ljust(14, "0"), 16)
                except ValueError:
                    return 1.0
                return (1 << _RANDOMNESS_BITS) / ((1 << _RANDOMNESS_BITS) - threshold)
    return 1.0


class _TracerProvider(TracerProvider):
    """The SDK's provider; with ``follows_parent`` (its sampler keeps a span exactly when its parent
    was kept), its tracers skip the work for a span inside a trace that is not kept."""

    def __init__(self, *args, follows_parent: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._follows_parent = follows_parent

    def get_tracer(self, *args, **kwargs) -> trace.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if not self._follows_parent or isinstance(tracer, trace.NoOpTracer):  # OTEL_SDK_DISABLED
            return tracer
        return _ParentFollowingTracer(tracer)


def _dropped_parent(context) -> tuple[trace.Span, trace.SpanContext | None]:
    """The parent span in ``context`` (or the current one), and its context when its trace is
    not kept (so no child of it is either); None otherwise."""
    parent = trace.get_current_span(context)
    span_context = parent.get_span_context()
    if span_context.is_valid and not span_context.trace_flags.sampled and not parent.is_recording():
        return parent, span_context
    return parent, None


class _ParentFollowingTracer(trace.Tracer):
    """A span whose parent's trace is not kept costs the SDK ~6-11 µs (an id, a sampler call, a
    context) for nothing anyone sees; under load most traces are not kept. Such a span is the
    parent's context again, as a non-recording span: what goes downstream (``traceparent``, not
    sampled) and into log lines (trace id) is the same; only the span id is the parent's."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(self, name, context=None, *args, **kwargs) -> trace.Span:
        _, dropped = _dropped_parent(context)
        if dropped is not None:
            return trace.NonRecordingSpan(dropped)
        return self._tracer.start_span(name, context, *args, **kwargs)

    def start_as_current_span(self, name, context=None, *args, **kwargs):
        parent, dropped = _dropped_parent(context)
        if dropped is None:
            return self._tracer.start_as_current_span(name, context, *args, **kwargs)
        if context is None:  # the parent is current already
            return nullcontext(parent)
        return trace.use_span(trace.NonRecordingSpan(dropped), end_on_exit=False)


class _HashedOnce(Resource):
    """A resource hashed once. The SDK's OTLP encoder groups each batch's spans by resource and
    hashes it per span, by dumping its attributes to JSON: 1.3% of a service's CPU under load.
    (Equality is Resource's; the hash is the same value, kept.)"""

    def __init__(self, attributes, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def _local_session():
    """An HTTP session for the embedded receiver on loopback: no proxy or .netrc to look up in the
    environment on every export (``requests`` does it per request otherwise)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    return session


def _otlp_exporter(**options) -> SpanExporter:
    # Imported only when spans are exported over OTLP (it brings protobuf and requests).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(**options)


def tracer(name: str = "microshop", provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """A tracer from ``provider``, or from the global provider when there is none."""
    return provider.get_tracer(name) if provider is not None else trace.get_tracer(name)


def inject_headers(headers: MutableMapping[str, str], span: trace.Span | None = None) -> MutableMapping[str, str]:
    """Write the current trace context (traceparent, tracestate), or ``span``'s, into outgoing headers."""
    propagate.inject(headers, context=trace.set_span_in_context(span) if span is not None else None)
    return headers


def extract_context(headers: Mapping[str, str]):
    return propagate.extract(headers)

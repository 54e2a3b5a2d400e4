"""Where a service's spans go (telemetry.tracer_provider): over real OTLP/HTTP to microshop's own
receiver and to whatever the standard OTEL_* variables name, and only as many as the standard
sampler variables let through. The receivers here are plain HTTP servers that keep what they get."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from microshop_chassis.telemetry import (
    RateLimitedSampler,
    encode_threshold,
    inject_headers,
    sampling_weight,
    tracer_provider,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, get_current_span, set_span_in_context


class OtlpSink:
    """An OTLP/HTTP endpoint on a free port keeping every export request it decodes."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ExportTraceServiceRequest]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                message = ExportTraceServiceRequest()
                message.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                sink.requests.append((self.path, message))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list[tuple[str, str]]:
        """(service.name, span name) of every span received."""
        found = []
        for _path, message in self.requests:
            for resource_spans in message.resource_spans:
                service = next(attribute.value.string_value for attribute in resource_spans.resource.attributes
                               if attribute.key == "service.name")
                found += [(service, span.name) for scope in resource_spans.scope_spans for span in scope.spans]
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    receiver = OtlpSink()
    yield receiver
    receiver.close()


def test_spans_go_to_the_embedded_receiver_and_to_the_standard_endpoint_alike(sink, monkeypatch):
    team_backend = OtlpSink()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", team_backend.url)
        provider = tracer_provider("orders", telemetry_url=sink.url, instance="orders-1")
        with provider.get_tracer("test").start_as_current_span("POST /orders"):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
        assert sink.spans() == [("orders", "POST /orders")]
        assert [path for path, _ in sink.requests] == ["/v1/traces"]
        assert team_backend.spans() == [("orders", "POST /orders")]
        assert [path for path, _ in team_backend.requests] == ["/v1/traces"]  # the standard path appended
    finally:
        team_backend.close()


def test_the_standard_sampler_variables_choose_how_many_traces_are_kept(sink, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    provider = tracer_provider("orders", telemetry_url=sink.url)
    with provider.get_tracer("test").start_as_current_span("POST /orders") as span:
        assert not span.is_recording()
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert sink.spans() == []

    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1")
    provider = tracer_provider("orders", telemetry_url=sink.url)
    with provider.get_tracer("test").start_as_current_span("POST /orders"):
        pass
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert sink.spans() == [("orders", "POST /orders")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def offer(sampler: RateLimitedSampler, clock: FakeClock, per_second: float, seconds: float) -> list:
    """New traces at a steady rate for a while; the sampling results."""
    ids = random.Random(7)
    results = []
    for _ in range(round(per_second * seconds)):
        clock.now += 1 / per_second
        results.append(sampler.should_sample(None, ids.getrandbits(128), "POST /api/orders"))
    return results


def test_below_its_rate_the_sampler_keeps_every_new_trace_and_says_each_stands_for_itself():
    clock = FakeClock()
    results = offer(RateLimitedSampler(10, clock=clock), clock, per_second=8, seconds=60)
    assert all(result.decision.is_sampled() for result in results)
    assert {sampling_weight(result.trace_state.to_header()) for result in results} == {1.0}


def test_above_its_rate_the_sampler_keeps_about_its_rate_and_weighs_what_it_keeps_for_the_rest():
    clock = FakeClock()
    sampler = RateLimitedSampler(10, clock=clock)
    offer(sampler, clock, per_second=200, seconds=10)  # the average has adapted
    results = offer(sampler, clock, per_second=200, seconds=30)
    kept = [result for result in results if result.decision.is_sampled()]
    assert 8 * 30 <= len(kept) <= 12 * 30
    # Together the kept traces stand for every trace offered, as the console's map counts them.
    stood_for = sum(sampling_weight(result.trace_state.to_header()) for result in kept)
    assert stood_for == pytest.approx(len(results), rel=0.15)


def test_a_rate_limited_service_follows_the_decision_of_the_trace_it_continues(sink, monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    provider = tracer_provider("orders", telemetry_url=sink.url, traces_per_second=10)
    tracer = provider.get_tracer("test")
    dropped = SpanContext(trace_id=0xAB, span_id=0xCD, is_remote=True, trace_flags=TraceFlags(0))
    with tracer.start_as_current_span("POST /orders", context=set_span_in_context(NonRecordingSpan(dropped))) as span:
        assert not span.is_recording()  # its caller did not keep the trace: neither does it
    with tracer.start_as_current_span("POST /orders") as span:
        assert span.is_recording() and span.get_span_context().trace_state.get("ot") == "th:0"
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert sink.spans() == [("orders", "POST /orders")]


def test_inside_a_trace_that_is_not_kept_a_span_carries_its_parents_context_and_records_nothing(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    tracer = tracer_provider("orders", traces_per_second=10).get_tracer("test")
    dropped = SpanContext(trace_id=0xAB, span_id=0xCD, is_remote=True, trace_flags=TraceFlags(0))
    with tracer.start_as_current_span("POST /orders", context=set_span_in_context(NonRecordingSpan(dropped))) as edge:
        assert get_current_span() is edge and not edge.is_recording()
        with tracer.start_as_current_span("saga step") as step:
            child = tracer.start_span("PUT inventory")
            headers = inject_headers({}, child)
    for span in (edge, step, child):
        assert not span.is_recording()
        assert span.get_span_context().trace_id == 0xAB and not span.get_span_context().trace_flags.sampled
    # What goes downstream still names the trace, and still says it is not kept.
    assert headers["traceparent"] == f"00-{0xAB:032x}-{0xCD:016x}-00"


def test_a_kept_trace_still_gets_a_recorded_span_of_its_own_for_every_child(sink, monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    provider = tracer_provider("orders", telemetry_url=sink.url, traces_per_second=10)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders") as root:
        with tracer.start_as_current_span("saga step") as step:
            call = tracer.start_span("PUT inventory")
            assert root.is_recording() and step.is_recording() and call.is_recording()
            call.end()
    assert step.parent.span_id == root.get_span_context().span_id
    assert call.parent.span_id == step.get_span_context().span_id
    assert provider.force_flush(10_000)
    provider.shutdown()
    assert sorted(name for _service, name in sink.spans()) == ["POST /orders", "PUT inventory", "saga step"]


def test_a_sampler_of_the_users_choosing_gets_the_sdks_tracer_unchanged(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")  # ignores the parent: no shortcut may apply
    tracer = tracer_provider("orders").get_tracer("test")
    dropped = SpanContext(trace_id=0xAB, span_id=0xCD, is_remote=True, trace_flags=TraceFlags(0))
    with tracer.start_as_current_span("POST /orders", context=set_span_in_context(NonRecordingSpan(dropped))) as span:
        assert span.is_recording() and span.get_span_context().span_id != 0xCD


@pytest.mark.parametrize(("trace_state", "weight"), [
    ("", 1.0), ("ot=th:0", 1.0), ("ot=th:8", 2.0), ("vendor=x,ot=rv:12;th:c", 4.0), ("ot=th:e", 8.0),
    ("ot=th:zz", 1.0), ("ot=th:123456789abcdef0", 1.0),  # not a threshold: counted as itself
])
def test_a_trace_state_says_how_many_traces_a_kept_one_stands_for(trace_state, weight):
    assert sampling_weight(trace_state) == weight
    assert encode_threshold(0) == "0" and encode_threshold(1 << 55) == "8"

"""Where a service's spans go (telemetry.tracer_provider): over real OTLP/HTTP to microshop's own
receiver and to whatever the standard OTEL_* variables name, and only as many as the standard
sampler variables let through. The receivers here are plain HTTP servers that keep what they get."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from microshop_chassis.telemetry import tracer_provider
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


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

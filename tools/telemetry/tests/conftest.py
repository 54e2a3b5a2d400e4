"""A receiver served by a real uvicorn on a free port, and spans made by the OpenTelemetry SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from microshop_chassis.testing import ApiClient, RunningApp
from microshop_telemetry.app import ReceiverConfig, create_app
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


class Receiver:
    """A receiver served on a free port for the length of an ``async with``."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self._running = RunningApp(create_app(config))
        self.url = self._running.url
        self.api = ApiClient(self.url)

    async def __aenter__(self) -> Receiver:
        await self._running.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._running.__aexit__(*exc)


@pytest.fixture
def receiver_at(tmp_path: Path) -> Callable[..., Receiver]:
    """A receiver with some settings changed: ``async with receiver_at(max_body_bytes=1024) as r``."""
    return lambda **overrides: Receiver(ReceiverConfig(db_path=tmp_path / "spans.db", **overrides))


@pytest_asyncio.fixture
async def receiver(receiver_at) -> AsyncIterator[Receiver]:
    async with receiver_at() as started:
        yield started


@pytest.fixture
def checkout_spans() -> Callable[..., list[ReadableSpan]]:
    return make_checkout_spans


def make_checkout_spans(order_id: str = "ord-1") -> list[ReadableSpan]:
    """A small checkout as the SDK records it: the orders server span, a client call to
    inventory under it, and a payment step that failed with an event."""
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as root:
        root.set_attribute("microshop.order.id", order_id)
        with tracer.start_as_current_span("reserve stock", kind=SpanKind.CLIENT) as reserve:
            reserve.set_attribute("microshop.saga.step", "reserve")
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as charge:
            charge.add_event("retry", {"attempt": 2})
            charge.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.shutdown()
    return list(recorded.get_finished_spans())

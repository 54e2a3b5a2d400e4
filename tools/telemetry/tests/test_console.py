"""The console's pages and the logic under them: the waterfall's order and bars, which span a
failed trace opens on, an order's saga as a timeline, and a trace's lines from the log files."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
from microshop_telemetry.console import first_failure, saga_timeline, waterfall
from microshop_telemetry.tracelogs import trace_log_lines
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

TRACE = "ab" * 16
START = 1_800_000_000_000_000_000


def span(span_id: str, parent: str | None, service: str, name: str, offset_ms: float, duration_ms: float, *,
         kind: str = "internal", status: str = "ok", **attributes) -> dict:
    start = START + int(offset_ms * 1e6)
    return {"trace_id": TRACE, "span_id": span_id, "parent_span_id": parent, "service": service, "name": name,
            "kind": kind, "start_ns": start, "end_ns": start + int(duration_ms * 1e6), "duration_ms": duration_ms,
            "status": status, "status_message": "", "attributes": attributes, "events": []}


# A checkout whose charge failed: the card processor's 503 under payments' server span, answered
# up through orders and the gateway.
GATEWAY = span("a" * 16, None, "gateway", "POST /api/orders", 0, 100, kind="server", status="error")
ORDERS = span("b" * 16, "a" * 16, "orders", "POST /orders", 5, 90, kind="server", status="error")
CALL = span("c" * 16, "b" * 16, "orders", "POST payments", 10, 50, kind="client", status="error")
PAYMENTS = span("d" * 16, "c" * 16, "payments", "POST /charges", 12, 45, kind="server", status="error")
PROCESSOR = span("e" * 16, "d" * 16, "payments", "POST card-processor", 15, 5, kind="client", status="error")
STATEMENT = span("f" * 16, "b" * 16, "orders", "UPDATE orders", 70, 1, kind="client")
FAILED_CHECKOUT = [STATEMENT, PROCESSOR, GATEWAY, PAYMENTS, ORDERS, CALL]


def test_the_waterfall_lists_each_span_after_its_parent_with_its_depth_and_bar():
    rows = waterfall(FAILED_CHECKOUT)
    assert [row.span["span_id"][0] for row in rows] == ["a", "b", "c", "d", "e", "f"]
    assert [row.depth for row in rows] == [0, 1, 2, 3, 4, 2]
    payments = rows[3]
    assert (payments.left_pct, payments.width_pct) == (12.0, 45.0)


def test_the_waterfall_binds_each_log_line_to_its_span():
    logs = [{"span_id": "d" * 16, "event": "card_processor_unavailable"}, {"span_id": "0" * 16, "event": "x"}]
    rows = {row.span["span_id"]: row for row in waterfall(FAILED_CHECKOUT, logs)}
    assert [record["event"] for record in rows["d" * 16].logs] == ["card_processor_unavailable"]
    assert rows["a" * 16].logs == []


def test_a_span_whose_parent_is_missing_or_loops_is_still_shown():
    spans = [span("1" * 16, "9" * 16, "reports", "consume OrderPlaced", 0, 1),
             span("2" * 16, "3" * 16, "x", "loop a", 1, 1), span("3" * 16, "2" * 16, "x", "loop b", 2, 1)]
    assert sorted(row.span["span_id"] for row in waterfall(spans)) == ["1" * 16, "2" * 16, "3" * 16]


def test_a_failed_trace_opens_on_the_deepest_failed_server_span_where_the_error_was_logged():
    assert first_failure(FAILED_CHECKOUT) == PAYMENTS["span_id"]


def test_a_failure_without_a_failed_server_span_opens_on_the_earliest_failed_span():
    failed_statement = {**STATEMENT, "status": "error"}
    assert first_failure([{**GATEWAY, "status": "ok"}, failed_statement]) == STATEMENT["span_id"]
    assert first_failure([{**GATEWAY, "status": "ok"}]) is None


def saga(step: str, offset_ms: float, *, status: str = "ok", ok: bool = True, next_step: str = "") -> dict:
    attributes = {"microshop.saga.step": step, "microshop.saga.ok": ok, "microshop.saga.next_step": next_step}
    if status == "error":
        attributes = {"microshop.saga.step": step}
    return span(f"{int(offset_ms):016x}", None, "orders", f"saga {step}", offset_ms, 5, status=status, **attributes)


def test_the_saga_timeline_shows_retries_compensations_and_outcomes_in_time_order():
    steps = saga_timeline([saga("release_stock", 40, next_step="done"),
                           saga("charge_payment", 20, ok=False, next_step="release_stock"),
                           saga("reserve_stock", 0, next_step="charge_payment"),
                           saga("charge_payment", 10, status="error")])
    assert [(s["step"], s["attempt"], s["retry"], s["compensation"], s["outcome"]) for s in steps] == [
        ("reserve_stock", 1, False, False, "ok"),
        ("charge_payment", 1, False, False, "failed"),
        ("charge_payment", 2, True, False, "refused"),
        ("release_stock", 1, False, True, "ok"),
    ]


def test_a_traces_log_lines_come_from_every_file_oldest_first_and_bounded(tmp_path: Path):
    def line(trace_id: str, timestamp: str, event: str) -> str:
        return json.dumps({"event": event, "timestamp": timestamp, "trace_id": trace_id, "span_id": "d" * 16})
    (tmp_path / "payments.log").write_text("\n".join([
        "----- a supervisor banner, not JSON",
        line(TRACE, "2026-01-01T00:00:02Z", "card_processor_unavailable"),
        line("cd" * 16, "2026-01-01T00:00:03Z", "another trace"),
    ]) + "\n")
    (tmp_path / "orders.log").write_text(line(TRACE, "2026-01-01T00:00:01Z", "saga_step") + "\n")
    found = trace_log_lines(tmp_path, TRACE)
    assert [(record["component"], record["event"]) for record in found] == [
        ("orders", "saga_step"), ("payments", "card_processor_unavailable")]
    assert [record["event"] for record in trace_log_lines(tmp_path, TRACE, max_lines=1)] == [
        "card_processor_unavailable"]
    assert trace_log_lines(None, TRACE) == [] and trace_log_lines(tmp_path / "none", TRACE) == []


async def export_with_sdk(url: str, spans) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=10)
    try:  # synchronous (requests): in a thread, so the server in this loop can answer
        await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


async def page(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def test_a_search_by_order_links_to_the_waterfall_opened_on_the_failed_span(receiver_at, checkout_spans,
                                                                                   tmp_path: Path):
    spans = checkout_spans("ord-console")
    failed = next(s for s in spans if s.name == "charge card")
    trace_id = f"{failed.context.trace_id:032x}"
    failed_id = f"{failed.context.span_id:016x}"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "orders.log").write_text(json.dumps(
        {"event": "charge_failed", "level": "warning", "trace_id": trace_id, "span_id": failed_id}) + "\n")
    async with receiver_at(logs_dir=tmp_path / "logs") as receiver:
        await export_with_sdk(receiver.url, spans)
        status, search = await page(f"{receiver.url}/traces?order_id=ord-console")
        assert status == 200
        link = re.search(r'class="trace-link" href="([^"]+)"', search).group(1)
        assert link == f"/traces/{trace_id}?open={failed_id}#span-{failed_id}"
        status, trace = await page(receiver.url + link.split("#")[0])
        assert status == 200
        opened = re.search(rf'<details id="span-{failed_id}"[^>]*>', trace).group(0)
        assert "open" in opened and "error" in opened
        assert "charge_failed" in trace and "retry" in trace  # its log line and its event
        assert (await page(f"{receiver.url}/traces/{'0' * 32}"))[0] == 404


async def test_the_map_page_draws_the_services_of_recent_spans(receiver, checkout_spans):
    await export_with_sdk(receiver.url, checkout_spans())
    status, html = await page(f"{receiver.url}/")
    assert status == 200 and 'data-node="orders"' in html
    status, html = await page(f"{receiver.url}/?minutes=-1")
    assert status == 422

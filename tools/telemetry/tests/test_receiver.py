"""The receiver over real HTTP: what OTLP exporters send is kept and found through the query API."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import aiohttp
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from microshop_chassis.testing import wait_until
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

TRACE_ID = "5b8efff798038103d269b633813fc60c"
ROOT_ID = "eee19b7ec3c1b174"
CHILD_ID = "eee19b7ec3c1b173"


async def export_with_sdk(url: str, spans, compression: Compression = Compression.NoCompression) -> SpanExportResult:
    # The SDK's exporter is synchronous (requests): in a thread, so the server in this loop can answer.
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=compression, timeout=10)
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


async def post(url: str, body: bytes, content_type: str, **headers: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/traces", data=body,
                                headers={"Content-Type": content_type, **headers}) as response:
            return response.status, response.headers.get("Content-Type", ""), await response.read()


def otlp_json(*, start_ns: int | None = None, order_id: str = "ord-json", trace_id: str = TRACE_ID) -> dict:
    """A payload written by hand per the OTLP/JSON encoding: hex ids, integer enums, 64-bit integers
    as decimal strings."""
    start = start_ns if start_ns is not None else time.time_ns()
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payments"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [
            {"traceId": trace_id, "spanId": ROOT_ID, "name": "POST /payments", "kind": 2,
             "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 12_300_000),
             "attributes": [{"key": "microshop.order.id", "value": {"stringValue": order_id}},
                            {"key": "http.response.status_code", "value": {"intValue": "502"}}],
             "status": {"code": 2, "message": "card processor unreachable"}},
            {"traceId": trace_id, "spanId": CHILD_ID, "parentSpanId": ROOT_ID, "name": "POST /charges", "kind": 3,
             "startTimeUnixNano": str(start + 1_000_000), "endTimeUnixNano": str(start + 11_000_000),
             "events": [{"timeUnixNano": str(start + 2_000_000), "name": "retry",
                         "attributes": [{"key": "attempt", "value": {"intValue": "2"}}]}],
             "status": {}},
        ]}],
    }]}


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
async def test_spans_exported_by_the_sdk_are_kept_and_found_by_trace_and_by_order(
        receiver, compression, checkout_spans):
    spans = checkout_spans(order_id="ord-1")
    assert await export_with_sdk(receiver.url, spans, compression) == SpanExportResult.SUCCESS

    trace_id = format(spans[0].context.trace_id, "032x")
    reply = await receiver.api.get(f"/api/traces/{trace_id}")
    assert reply.status == 200
    by_name = {span["name"]: span for span in reply.body["spans"]}
    assert [span["name"] for span in reply.body["spans"]] == ["POST /orders", "reserve stock", "charge card"]
    root, charge = by_name["POST /orders"], by_name["charge card"]
    assert root["service"] == "orders" and root["kind"] == "server" and root["parent_span_id"] is None
    assert root["order_id"] == "ord-1" and root["status"] == "unset"
    assert charge["parent_span_id"] == root["span_id"] and charge["kind"] == "client"
    assert charge["status"] == "error" and charge["status_message"] == "card declined"
    assert charge["events"][0]["name"] == "retry" and charge["events"][0]["attributes"] == {"attempt": 2}
    assert by_name["reserve stock"]["attributes"] == {"microshop.saga.step": "reserve"}

    found = await receiver.api.get("/api/traces", params={"order_id": "ord-1"})
    assert [summary["trace_id"] for summary in found.body] == [trace_id]
    summary = found.body[0]
    assert (summary["root_name"], summary["root_service"]) == ("POST /orders", "orders")
    assert summary["span_count"] == 3 and summary["error"] is True and summary["services"] == ["orders"]


async def test_a_batch_sent_again_is_kept_once(receiver, checkout_spans):
    spans = checkout_spans()
    for _attempt in range(2):  # an exporter retries a batch whose answer it did not get
        assert await export_with_sdk(receiver.url, spans) == SpanExportResult.SUCCESS
    assert (await receiver.api.get("/health")).body["spans"] == 3


async def test_an_otlp_json_payload_with_hex_ids_is_kept_with_those_ids(receiver):
    status, content_type, body = await post(receiver.url, json.dumps(otlp_json()).encode(), "application/json")
    assert (status, content_type, json.loads(body)) == (200, "application/json", {})

    spans = (await receiver.api.get(f"/api/traces/{TRACE_ID}")).body["spans"]
    assert [(span["span_id"], span["parent_span_id"]) for span in spans] == [(ROOT_ID, None), (CHILD_ID, ROOT_ID)]
    root, child = spans
    assert root["service"] == "payments" and root["kind"] == "server" and root["duration_ms"] == pytest.approx(12.3)
    assert root["attributes"]["http.response.status_code"] == 502
    assert (root["status"], root["status_message"]) == ("error", "card processor unreachable")
    assert child["kind"] == "client" and child["events"][0]["attributes"] == {"attempt": 2}
    assert root["order_id"] == "ord-json"


async def test_a_span_of_a_sampled_trace_keeps_the_weight_its_trace_state_gives_it(receiver):
    payload = otlp_json()
    root, child = payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    root["traceState"] = "ot=th:c"  # a quarter of the traces kept: this one stands for four
    status, _type, _body = await post(receiver.url, json.dumps(payload).encode(), "application/json")
    assert status == 200
    spans = (await receiver.api.get(f"/api/traces/{TRACE_ID}")).body["spans"]
    assert [span["weight"] for span in spans] == [4.0, 1.0]  # the child says nothing: itself


async def test_an_otlp_json_payload_may_come_gzipped(receiver):
    compressed = gzip.compress(json.dumps(otlp_json()).encode())
    status, _type, _body = await post(receiver.url, compressed, "application/json", **{"Content-Encoding": "gzip"})
    assert status == 200
    assert (await receiver.api.get(f"/api/traces/{TRACE_ID}")).status == 200


async def test_spans_without_valid_ids_are_refused_by_a_partial_success(receiver):
    payload = otlp_json()
    payload["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = "0000000000000000"
    status, _type, body = await post(receiver.url, json.dumps(payload).encode(), "application/json")
    assert status == 200
    assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"  # int64: a string in JSON
    assert len((await receiver.api.get(f"/api/traces/{TRACE_ID}")).body["spans"]) == 1


@pytest.mark.parametrize(("body", "content_type"), [
    (b"\xff\xff\xff", "application/x-protobuf"),
    (b'{"resourceSpans": [', "application/json"),
    (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not hex"}]}]}]}).encode(),
     "application/json"),
])
async def test_a_body_that_does_not_parse_is_400_with_a_status_in_its_encoding(receiver, body, content_type):
    status, answered_type, answer = await post(receiver.url, body, content_type)
    assert (status, answered_type) == (400, content_type)
    if content_type == "application/json":
        reason = json.loads(answer)
        assert reason["code"] == 3 and reason["message"]
    else:
        reason = RpcStatus.FromString(answer)
        assert reason.code == 3 and "protobuf" in reason.message


async def test_another_content_type_is_415(receiver):
    status, content_type, body = await post(receiver.url, b"spans", "text/plain")
    assert (status, content_type) == (415, "application/problem+json")
    assert "application/x-protobuf" in json.loads(body)["detail"]


async def test_an_unknown_content_encoding_is_415(receiver):
    status, _type, _body = await post(receiver.url, b"spans", "application/json", **{"Content-Encoding": "br"})
    assert status == 415


async def test_a_body_over_the_bound_is_413_also_once_decompressed(receiver_at):
    async with receiver_at(max_body_bytes=4096) as small:
        status, _type, answer = await post(small.url, b"\x00" * 5000, "application/x-protobuf")
        assert status == 413 and RpcStatus.FromString(answer).code == 8
        bomb = gzip.compress(b" " * 100_000)  # a few hundred bytes that inflate past the bound
        assert len(bomb) < 4096
        status, _type, _answer = await post(small.url, bomb, "application/json", **{"Content-Encoding": "gzip"})
        assert status == 413
        assert (await small.api.get("/health")).body["spans"] == 0


async def test_a_protobuf_export_is_answered_with_an_empty_protobuf_response(receiver, checkout_spans):
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    status, content_type, body = await post(receiver.url, encode_spans(checkout_spans()).SerializeToString(),
                                            "application/x-protobuf")
    assert (status, content_type) == (200, "application/x-protobuf")
    assert ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()


async def test_an_unknown_trace_is_a_404_problem(receiver):
    reply = await receiver.api.get(f"/api/traces/{'ab' * 16}")
    assert reply.status == 404 and reply.headers["Content-Type"] == "application/problem+json"
    assert reply.body["type"].endswith("/trace-not-found")


async def test_trace_search_filters_by_service_error_and_duration_newest_first(receiver):
    now = time.time_ns()
    older = otlp_json(start_ns=now - 5_000_000_000, trace_id="1" * 32)
    newer = otlp_json(start_ns=now, trace_id="2" * 32)
    newer["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["status"] = {"code": 1}
    for payload in (older, newer):
        assert (await post(receiver.url, json.dumps(payload).encode(), "application/json"))[0] == 200

    async def trace_ids(**params) -> list[str]:
        reply = await receiver.api.get("/api/traces", params={key: str(value) for key, value in params.items()})
        assert reply.status == 200, reply.body
        return [summary["trace_id"] for summary in reply.body]

    assert await trace_ids() == ["2" * 32, "1" * 32]
    assert await trace_ids(limit=1) == ["2" * 32]
    assert await trace_ids(error="true") == ["1" * 32]
    assert await trace_ids(error="false") == ["2" * 32]
    assert await trace_ids(service="payments") == ["2" * 32, "1" * 32]
    assert await trace_ids(service="orders") == []
    assert await trace_ids(trace_id="1" * 32) == ["1" * 32]
    assert await trace_ids(min_duration_ms=12.3) == ["2" * 32, "1" * 32]
    assert await trace_ids(min_duration_ms=12.4) == []


async def test_the_receiver_prunes_spans_past_their_retention_by_itself(receiver_at):
    async with receiver_at(retention_seconds=60, prune_interval_seconds=0.05) as short:
        stale = otlp_json(start_ns=time.time_ns() - 120 * 1_000_000_000)
        assert (await post(short.url, json.dumps(stale).encode(), "application/json"))[0] == 200

        async def pruned() -> bool:
            return (await short.api.get("/health")).body["spans"] == 0

        await wait_until(pruned, timeout=10, what="the stale spans to be pruned")
        assert (await short.api.get(f"/api/traces/{TRACE_ID}")).status == 404

"""`microshop trace` (microshop_cli.trace) against a real receiver."""

from __future__ import annotations

import asyncio
import io
import json
import time

import aiohttp
from microshop_chassis.testing import free_port
from microshop_cli.trace import trace_command
from rich.console import Console


def payload(trace_id: str, name: str, start_ns: int, order_id: str) -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": trace_id[:16], "name": name, "kind": 2,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + 3_000_000),
            "attributes": [{"key": "microshop.order.id", "value": {"stringValue": order_id}}]}]}],
    }]}).encode()


async def run_trace(target: str, url: str) -> tuple[int, str]:
    console = Console(record=True, width=140, file=io.StringIO())
    code = await asyncio.to_thread(trace_command, target, url, console)  # blocking urllib: off the loop
    return code, console.export_text()


async def test_an_order_prints_each_of_its_traces_oldest_first(receiver):
    now = time.time_ns()
    checkout, cancel = "c" * 32, "d" * 32
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        # The cancel is sent first: the output's order comes from the start times, not from arrival.
        for trace_id, name, start in ((cancel, "POST /orders/ord-5/cancel", now),
                                      (checkout, "POST /orders", now - 10**9)):
            async with session.post(f"{receiver.url}/v1/traces", data=payload(trace_id, name, start, "ord-5")) as reply:
                assert reply.status == 200

    code, text = await run_trace("ord-5", receiver.url)
    assert code == 0
    assert text.index(f"trace {checkout}") < text.index("POST /orders  3.0 ms") < text.index(f"trace {cancel}")

    code, text = await run_trace(cancel.upper(), receiver.url)  # a trace id, in any case
    assert code == 0 and f"trace {cancel}" in text and checkout not in text


async def test_nothing_found_is_exit_1_with_a_message(receiver):
    code, text = await run_trace("ord-unknown", receiver.url)
    assert code == 1 and "No spans of order ord-unknown" in text
    code, text = await run_trace("e" * 32, receiver.url)
    assert code == 1 and f"No spans of trace {'e' * 32}" in text


async def test_an_unreachable_receiver_is_exit_1_with_a_message():
    url = f"http://127.0.0.1:{free_port()}"
    code, text = await run_trace("ord-1", url)
    assert code == 1 and "cannot reach the telemetry receiver" in text

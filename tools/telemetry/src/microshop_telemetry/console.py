"""The operations console: server-rendered pages over the span store and the services' logs.

``/`` the service map, ``/traces`` the search, ``/traces/{id}`` a waterfall with each span's
attributes, events and log lines, ``/orders/{id}`` an order's saga as a timeline. No JavaScript:
a span opens as a <details> element, and a link to ``?open=SPAN#span-SPAN`` opens and shows one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParameter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from .servicemap import build_service_map, layout
from .tracelogs import trace_log_lines

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
static_files = StaticFiles(directory=HERE / "static")
# What a log line shows beside its time and level (which have their own columns or styles).
_LOG_HIDDEN = ("component", "timestamp", "level", "trace_id", "span_id", "request_id", "service")

TRACE_ID_PATTERN = "^[0-9a-fA-F]{32}$"
# The saga steps that undo an earlier one (orders/saga.py).
COMPENSATIONS = ("release_stock", "refund_payment")
MAP_SPAN_LIMIT = 200_000
SEARCH_LIMIT = 100


@dataclass(frozen=True)
class WaterfallRow:
    span: Mapping[str, Any]
    depth: int
    left_pct: float
    width_pct: float
    logs: list[dict[str, Any]]


def waterfall(spans: Sequence[Mapping[str, Any]],
              logs: Sequence[Mapping[str, Any]] = ()) -> list[WaterfallRow]:
    """The spans in tree order (each after its parent, children by start), with their bars as
    percentages of the trace's length and the log lines bound to each (by ``span_id``)."""
    ordered = sorted(spans, key=lambda span: (span["start_ns"], span["span_id"]))
    if not ordered:
        return []
    start = ordered[0]["start_ns"]
    length = max(max(span["end_ns"] for span in ordered) - start, 1)
    known = {span["span_id"] for span in ordered}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for span in ordered:
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in known else None, []).append(span)
    logs_of: dict[str, list[dict[str, Any]]] = {}
    for record in logs:
        logs_of.setdefault(str(record.get("span_id")), []).append(dict(record))
    rows: list[WaterfallRow] = []
    placed: set[str] = set()
    # Iterative, not recursive: a trace may be deep, and a broken parent chain may loop.
    pending = [(span, 0) for span in reversed(children.get(None, []))]
    while pending or len(placed) < len(ordered):
        if not pending:  # spans in a parent cycle: shown at the top level
            pending = [(next(span for span in ordered if span["span_id"] not in placed), 0)]
        span, depth = pending.pop()
        if span["span_id"] in placed:
            continue
        placed.add(span["span_id"])
        rows.append(WaterfallRow(
            span=span, depth=depth,
            left_pct=100 * (span["start_ns"] - start) / length,
            width_pct=max(100 * (span["end_ns"] - span["start_ns"]) / length, 0.3),
            logs=logs_of.get(span["span_id"], []),
        ))
        pending.extend((child, depth + 1) for child in reversed(children.get(span["span_id"], [])))
    return rows


def first_failure(spans: Sequence[Mapping[str, Any]]) -> str | None:
    """The span to open first in a failed trace: the earliest failed server span none of whose
    descendants is a failed server span (where the error was answered, and logged); else the
    earliest failed span."""
    failed = [span for span in spans if span["status"] == "error"]
    if not failed:
        return None
    by_id = {span["span_id"]: span for span in spans}
    has_failed_server_below: set[str] = set()
    for span in failed:
        if span["kind"] != "server":
            continue
        parent_id, seen = span.get("parent_span_id"), set()
        while parent_id in by_id and parent_id not in seen:
            seen.add(parent_id)
            has_failed_server_below.add(parent_id)
            parent_id = by_id[parent_id].get("parent_span_id")
    deepest = [span for span in failed if span["kind"] == "server" and span["span_id"] not in has_failed_server_below]
    return min(deepest or failed, key=lambda span: span["start_ns"])["span_id"]


def saga_timeline(spans: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``saga <step>`` spans in time order: each with its attempt number at that step (a
    second attempt is a retry), whether it undoes an earlier step, and its outcome."""
    attempts: dict[str, int] = {}
    timeline = []
    for span in sorted(spans, key=lambda span: span["start_ns"]):
        attributes = span.get("attributes") or {}
        step = str(attributes.get("microshop.saga.step") or span["name"].removeprefix("saga "))
        attempts[step] = attempts.get(step, 0) + 1
        if span["status"] == "error":
            outcome = "failed"
        elif attributes.get("microshop.saga.ok") is False:
            outcome = "refused"
        else:
            outcome = "ok"
        timeline.append({
            "span": span, "step": step, "attempt": attempts[step], "retry": attempts[step] > 1,
            "compensation": step in COMPENSATIONS or step.startswith("cancel_"),
            "outcome": outcome, "next_step": attributes.get("microshop.saga.next_step"),
            "error": span.get("status_message") or _exception_message(span),
        })
    return timeline


def _exception_message(span: Mapping[str, Any]) -> str:
    for event in span.get("events") or []:
        if event.get("name") == "exception":
            attributes = event.get("attributes") or {}
            return f"{attributes.get('exception.type', '')}: {attributes.get('exception.message', '')}".strip(": ")
    return ""


def clock(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%H:%M:%S.%f")[:-3]


def log_line(record: Mapping[str, Any]) -> str:
    """``component event key=value ...``: a log record on one line."""
    rest = " ".join(f"{key}={value}" for key, value in record.items() if key not in (*_LOG_HIDDEN, "event"))
    return f"{record.get('component', '')}: {record.get('event', '')} {rest}".strip()


templates.env.filters["clock"] = clock
templates.env.filters["logline"] = log_line


def create_console(logs_dir: Path | None) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    async def service_map_page(request: Request,
                               minutes: Annotated[float, Query(gt=0, le=24 * 60)] = 15) -> HTMLResponse:
        spans = request.app.state.spans
        since_ns = time.time_ns() - int(minutes * 60e9)
        found = await spans.call(spans.store.spans_since, since_ns, MAP_SPAN_LIMIT)
        service_map = build_service_map(found, minutes * 60)
        nodes, edges, width, height = layout(service_map)
        return templates.TemplateResponse(request, "map.html", {
            "minutes": minutes, "nodes": nodes, "edges": edges, "width": width, "height": height,
            "span_count": len(found), "window_seconds": service_map.window_seconds})

    @router.get("/traces", response_class=HTMLResponse)
    async def search_page(
        request: Request,
        order_id: str = "",
        trace_id: str = "",
        service: str = "",
        errors_only: bool = False,
        min_duration_ms: str = "",
    ) -> HTMLResponse:
        form = {"order_id": order_id.strip(), "trace_id": trace_id.strip().lower(), "service": service.strip(),
                "errors_only": errors_only, "min_duration_ms": min_duration_ms.strip()}
        problems: list[str] = []
        minimum = None
        if form["min_duration_ms"]:
            try:
                minimum = max(0.0, float(form["min_duration_ms"]))
            except ValueError:
                problems.append("the minimum duration is a number of milliseconds")
        if form["trace_id"] and (len(form["trace_id"]) != 32 or not _is_hex(form["trace_id"])):
            problems.append("a trace id is 32 hexadecimal digits")
        results = []
        searched = any(value for value in form.values())
        if searched and not problems:
            spans = request.app.state.spans
            query = {"order_id": form["order_id"] or None, "trace_id": form["trace_id"] or None,
                     "service": form["service"] or None, "min_duration_ms": minimum}
            results = await spans.call(spans.store.traces, **query, error=True if errors_only else None,
                                       limit=SEARCH_LIMIT)
            if not errors_only:  # the failed ones always listed, however many others came since
                failed = await spans.call(spans.store.traces, **query, error=True, limit=SEARCH_LIMIT)
                listed = {summary["trace_id"] for summary in results}
                results = sorted([*results, *(s for s in failed if s["trace_id"] not in listed)],
                                 key=lambda summary: summary["start_ns"], reverse=True)
            for summary in results:
                summary["open"] = (await spans.call(_first_failure_of, spans.store, summary["trace_id"])
                                   if summary["error"] else None)
        return templates.TemplateResponse(request, "traces.html", {
            "form": form, "results": results, "problems": problems, "searched": searched})

    @router.get("/traces/{trace_id}", response_class=HTMLResponse)
    async def trace_page(request: Request, trace_id: Annotated[str, PathParameter(pattern=TRACE_ID_PATTERN)],
                         open: str = "") -> HTMLResponse:
        spans = request.app.state.spans
        found = await spans.call(spans.store.trace, trace_id)
        if not found:
            return templates.TemplateResponse(request, "missing.html", {"what": f"trace {trace_id}"},
                                              status_code=404)
        logs = await asyncio.to_thread(trace_log_lines, logs_dir, trace_id)
        rows = waterfall(found, logs)
        start = min(span["start_ns"] for span in found)
        return templates.TemplateResponse(request, "trace.html", {
            "trace_id": trace_id.lower(), "rows": rows, "logs": logs, "open": open or first_failure(found),
            "duration_ms": (max(span["end_ns"] for span in found) - start) / 1e6, "start_ns": start,
            "services": sorted({span["service"] for span in found}),
            "order_ids": sorted({span["order_id"] for span in found if span.get("order_id")}),
            "errors": sum(span["status"] == "error" for span in found), "logs_dir": logs_dir})

    @router.get("/orders/{order_id}", response_class=HTMLResponse)
    async def order_page(request: Request, order_id: Annotated[str, PathParameter(max_length=100)]) -> HTMLResponse:
        spans = request.app.state.spans
        steps = saga_timeline(await spans.call(spans.store.order_spans, order_id, "saga "))
        traces = await spans.call(spans.store.traces, order_id=order_id, limit=100)
        return templates.TemplateResponse(request, "order.html", {
            "order_id": order_id, "steps": steps, "traces": traces,
            "outcome": _saga_outcome(steps)})

    return router


def _first_failure_of(store: Any, trace_id: str) -> str | None:
    return first_failure(store.trace(trace_id))


def _saga_outcome(steps: Sequence[Mapping[str, Any]]) -> str:
    if not steps:
        return "no saga step recorded"
    last = steps[-1]
    if last["outcome"] == "failed":
        return f"stalled at {last['step']} (failed, to be retried)"
    if last["next_step"] == "done":
        undone = any(step["compensation"] for step in steps)
        return "done after compensation" if undone else "done"
    return f"in progress: next {last['next_step'] or 'unknown'}"


def _is_hex(text: str) -> bool:
    return all(character in "0123456789abcdef" for character in text)

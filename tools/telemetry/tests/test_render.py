"""A trace drawn for the terminal: nesting, timings, errors in red, spans whose parent is missing."""

from __future__ import annotations

import io

from microshop_telemetry.render import trace_tree
from rich.console import Console

TRACE = "ab" * 16
START = 1_800_000_000_000_000_000


def span(span_id: str, parent: str | None, service: str, name: str, offset_ms: float, duration_ms: float,
         status: str = "ok", message: str = "") -> dict:
    start = START + int(offset_ms * 1e6)
    return {"trace_id": TRACE, "span_id": span_id, "parent_span_id": parent, "service": service, "name": name,
            "start_ns": start, "end_ns": start + int(duration_ms * 1e6), "duration_ms": duration_ms,
            "status": status, "status_message": message, "attributes": {}, "events": []}


SPANS = [
    span("01" * 8, None, "gateway", "POST /api/orders", 0, 48.2),
    span("03" * 8, "02" * 8, "payments", "POST /payments", 10.5, 30.0, "error", "card processor unreachable"),
    span("02" * 8, "01" * 8, "orders", "POST /orders", 1.0, 45.0),
    span("04" * 8, "99" * 8, "reports", "consume OrderPlaced", 60.0, 2.5),
]


def rendered(spans: list[dict], **console_options) -> tuple[Console, str]:
    console = Console(record=True, width=140, file=io.StringIO(), **console_options)
    console.print(trace_tree(spans))
    return console, console.export_text(clear=False)


def test_spans_are_nested_by_parent_with_their_duration_and_offset():
    _console, text = rendered(SPANS)
    lines = text.splitlines()
    assert lines[0].startswith(f"trace {TRACE}  62.5 ms  4 spans  1 failed")
    gateway = next(i for i, line in enumerate(lines) if "gateway  POST /api/orders  48.2 ms  (+0.0 ms)" in line)
    orders = next(i for i, line in enumerate(lines) if "orders  POST /orders  45.0 ms  (+1.0 ms)" in line)
    payments = next(i for i, line in enumerate(lines) if "payments  POST /payments  30.0 ms  (+10.5 ms)" in line)
    assert gateway < orders < payments
    # Each child is drawn one level deeper than its parent.
    indent = [len(lines[i]) - len(lines[i].lstrip("│├└─ ")) for i in (gateway, orders, payments)]
    assert indent[0] < indent[1] < indent[2]


def test_a_failed_span_is_red_with_its_status_message():
    console, text = rendered(SPANS, force_terminal=True, color_system="standard")
    assert "POST /payments  30.0 ms  (+10.5 ms)  card processor unreachable" in text
    styled = console.export_text(styles=True)
    red = "\x1b[1;31m"
    assert f"{red}payments" in styled and f"{red}  card processor unreachable" in styled
    assert f"{red}gateway" not in styled


def test_a_span_whose_parent_is_missing_hangs_off_the_root():
    _console, text = rendered(SPANS)
    line = next(line for line in text.splitlines() if "consume OrderPlaced" in line)
    assert line.startswith("└── reports  consume OrderPlaced  2.5 ms  (+60.0 ms)")
    assert f"(parent {'99' * 8} not received)" in line


def test_spans_whose_parents_form_a_cycle_are_still_drawn():
    looped = [span("05" * 8, "06" * 8, "orders", "a", 0, 1), span("06" * 8, "05" * 8, "orders", "b", 1, 1)]
    _console, text = rendered(looped)
    assert "orders  a" in text and "orders  b" in text

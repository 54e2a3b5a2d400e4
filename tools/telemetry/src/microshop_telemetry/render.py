"""A trace in the terminal: its spans as a rich tree, each with its duration and its offset from
the start of the trace, failed spans in red with their status message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.text import Text
from rich.tree import Tree

ERROR_STYLE = "bold red"


def trace_tree(spans: Sequence[Mapping[str, Any]]) -> Tree:
    """The spans (as the query API returns them) nested by parent under a line naming the trace.
    A span whose parent was never received (or was pruned) hangs off that first line."""
    ordered = sorted(spans, key=lambda span: (span["start_ns"], span["span_id"]))
    trace_start = ordered[0]["start_ns"] if ordered else 0
    tree = Tree(_header(ordered, trace_start))
    known = {span["span_id"] for span in ordered}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for span in ordered:
        parent = span.get("parent_span_id")
        children.setdefault(parent if parent in known else None, []).append(span)

    placed: set[str] = set()
    # Iterative, not recursive: a trace may be deep, and a span may even (wrongly) name itself.
    pending = [(tree, span) for span in reversed(children.get(None, []))]
    while pending:
        branch, span = pending.pop()
        if span["span_id"] in placed:
            continue
        placed.add(span["span_id"])
        node = branch.add(_line(span, trace_start, orphan=bool(span.get("parent_span_id")) and branch is tree))
        pending.extend((node, child) for child in reversed(children.get(span["span_id"], [])))
    for span in ordered:  # parents that form a cycle: still shown, at the top
        if span["span_id"] not in placed:
            placed.add(span["span_id"])
            tree.add(_line(span, trace_start, orphan=True))
    return tree


def _header(spans: Sequence[Mapping[str, Any]], trace_start: int) -> Text:
    if not spans:
        return Text("no spans")
    duration_ms = (max(span["end_ns"] for span in spans) - trace_start) / 1e6
    errors = sum(span["status"] == "error" for span in spans)
    header = Text.assemble(("trace ", "bold"), (spans[0]["trace_id"], "bold"),
                           f"  {_ms(duration_ms)}  {len(spans)} spans")
    if errors:
        header.append(f"  {errors} failed", style=ERROR_STYLE)
    return header


def _line(span: Mapping[str, Any], trace_start: int, *, orphan: bool) -> Text:
    """``service  name  12.3 ms  (+4.5 ms)``, in red with `: message` when it failed."""
    failed = span["status"] == "error"
    line = Text.assemble(
        (span["service"], ERROR_STYLE if failed else "bold cyan"),
        "  ",
        (span["name"], ERROR_STYLE if failed else ""),
        "  ",
        (_ms(span["duration_ms"]), ERROR_STYLE if failed else "bold"),
        "  ",
        (f"(+{_ms((span['start_ns'] - trace_start) / 1e6)})", "dim"),
    )
    if failed:
        line.append(f"  {span.get('status_message') or 'error'}", style=ERROR_STYLE)
    if orphan:
        line.append(f"  (parent {span['parent_span_id']} not received)", style="dim")
    return line


def _ms(milliseconds: float) -> str:
    return f"{milliseconds:.1f} ms"

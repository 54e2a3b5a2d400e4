"""`microshop trace ORDER_ID|TRACE_ID`: a trace from the embedded telemetry receiver, drawn as a
tree in the terminal (microshop_telemetry.render)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from microshop_telemetry.render import trace_tree
from rich.console import Console
from rich.text import Text

TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
# An order's traces: its checkout (with the consumers of its events), then a cancel, a refund...
MAX_TRACES_PER_ORDER = 20
TIMEOUT_SECONDS = 10.0


class TraceLookupError(Exception):
    """The receiver could not be asked, or answered something else than traces."""


def trace_command(target: str, url: str, console: Console | None = None) -> int:
    """Print the trace ``target`` names (a trace id), or every trace of the order it names, oldest
    first; 1 with a message when there is none or the receiver cannot be reached."""
    console = console or Console()
    try:
        traces = find_traces(target.strip(), url.rstrip("/"))
    except TraceLookupError as exc:
        console.print(Text(str(exc), style="bold red"), soft_wrap=True)
        return 1
    if not traces:
        what = f"trace {target}" if TRACE_ID.match(target.strip()) else f"order {target}"
        console.print(Text(f"No spans of {what} at {url}: not sampled, never sent, not exported yet, or pruned.",
                           style="bold red"), soft_wrap=True)
        return 1
    for spans in traces:
        console.print(trace_tree(spans))
    return 0


def find_traces(target: str, url: str) -> list[list[dict[str, Any]]]:
    """The spans of each trace ``target`` names, oldest trace first."""
    if TRACE_ID.match(target):
        found = _get(f"{url}/api/traces/{target.lower()}")
        return [found["spans"]] if found else []
    query = urllib.parse.urlencode({"order_id": target, "limit": MAX_TRACES_PER_ORDER})
    summaries = _get(f"{url}/api/traces?{query}") or []
    traces = []
    for summary in reversed(summaries):  # the API answers newest first
        found = _get(f"{url}/api/traces/{summary['trace_id']}")
        if found:  # pruned in between: skip it
            traces.append(found["spans"])
    return traces


def _get(address: str) -> Any:
    """The JSON at ``address``; None for a 404."""
    try:
        with urllib.request.urlopen(address, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - our own URL
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise TraceLookupError(f"the telemetry receiver answered {exc.code} to {address}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TraceLookupError(f"cannot reach the telemetry receiver at {address}: {reason} "
                               "(is `microshop up` running?)") from None
    except ValueError as exc:
        raise TraceLookupError(f"the telemetry receiver answered something other than JSON: {exc}") from None

"""A trace's log lines, from every component's JSON log file in the data dir's logs folder.

The services write one JSON object a line with ``trace_id`` and ``span_id`` (microshop_chassis.logs).
The search is bounded, since log files only grow: the newest files only, the tail of each, and at
most ``max_lines`` lines in all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_FILES = 40
TAIL_BYTES = 16 * 1024 * 1024
MAX_LINES = 500


def trace_log_lines(logs_dir: Path | None, trace_id: str, *, max_lines: int = MAX_LINES,
                    max_files: int = MAX_FILES, tail_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The log records of this trace, oldest first, each with ``component`` (the file's name)."""
    if logs_dir is None or not logs_dir.is_dir():
        return []
    files = sorted((path for path in logs_dir.glob("*.log") if path.is_file()),
                   key=lambda path: path.stat().st_mtime, reverse=True)[:max_files]
    needle = trace_id.lower().encode()
    found: list[dict[str, Any]] = []
    for path in files:
        for line in _tail(path, tail_bytes):
            if needle not in line:  # cheap before parsing: most lines belong to other traces
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("trace_id") == trace_id.lower():
                found.append({"component": path.stem, **record})
    found.sort(key=lambda record: str(record.get("timestamp", "")))
    return found[-max_lines:]


def _tail(path: Path, limit: int) -> list[bytes]:
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - limit))
        lines = file.read().splitlines()
    return lines[1:] if size > limit else lines  # the first may be cut in half

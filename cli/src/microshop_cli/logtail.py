"""Reading the components' log files: the last lines, and following new ones like ``tail -f``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

BLOCK = 8192


def tail_lines(path: Path, count: int, end: int | None = None) -> list[str]:
    """The last ``count`` lines of a file, or of its first ``end`` bytes (read backwards from there,
    so a large log costs little)."""
    if count <= 0:
        return []
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            position, data = min(size, end) if end is not None else size, b""
            while position > 0 and data.count(b"\n") <= count:
                step = min(BLOCK, position)
                position -= step
                file.seek(position)
                data = file.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]


def sizes(sources: Mapping[str, Path]) -> dict[str, int]:
    return {name: _size(path) for name, path in sources.items()}


def follow(
    sources: Mapping[str, Path], emit: Callable[[str, str], None], *, start: Mapping[str, int] | None = None,
    interval: float = 0.2,
) -> None:
    """Emit (name, line) for every complete line written past ``start`` (default: the current sizes).
    Files that do not exist yet are picked up when they appear; a truncated one is read from its start."""
    offsets = dict(start) if start is not None else sizes(sources)
    partial = dict.fromkeys(sources, b"")
    while True:
        for name, path in sources.items():
            size = _size(path)
            if size < offsets[name]:
                offsets[name], partial[name] = 0, b""
            if size == offsets[name]:
                continue
            with path.open("rb") as file:
                file.seek(offsets[name])
                chunk = file.read(size - offsets[name])
            offsets[name] += len(chunk)
            *complete, partial[name] = (partial[name] + chunk).split(b"\n")
            for line in complete:
                emit(name, line.decode(errors="replace"))
        time.sleep(interval)  # tail -f polls too: new lines have no event to wait on


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0

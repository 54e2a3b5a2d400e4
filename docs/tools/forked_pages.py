"""Where a forked component's memory goes: its resident pages still shared with the fork server,
copied from it (copy-on-write: written after the fork), or new (at addresses the server never had);
with ``microshop up --merge-pages`` and KSM on, a copy the kernel has merged again with identical
pages is counted apart, as merged (its frame is a KSM page: /proc/kpageflags).

    python docs/tools/forked_pages.py DATA_DIR [COMPONENT ...]
    python docs/tools/forked_pages.py --build SERVICE [--objects]

Reads the pids of a running `microshop up -d DATA_DIR` from its run/state.json and compares, page
by page, the physical frame behind each writable virtual address in the component and in the fork
server (/proc/<pid>/pagemap: needs root, else the kernel hides the frame numbers). ``--build``
preloads here what the fork server does, then forks a child that only builds SERVICE's app (no
database, no serving) and one that does nothing, and compares each with this process; with
``--objects``, what kinds of this process's objects lie on the pages that building copied (each
page shared among the objects on it; gc-tracked objects, the code of functions and the strings
and constants those reference: most of what the preload made).
"""

from __future__ import annotations

import bisect
import json
import struct
import sys
from collections import Counter
from pathlib import Path

PAGE = 4096
_PRESENT = 1 << 63
_FRAME = (1 << 55) - 1
_KPF_KSM = 1 << 21  # linux/kernel-page-flags.h


def writable_regions(pid: int) -> list[tuple[int, int, str]]:
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if "w" in fields[1]:
            regions.append((start, end, fields[5].rsplit("/", 1)[-1] if len(fields) > 5 else "[anon]"))
    return regions


def frames(pid: int) -> dict[int, tuple[int, str]]:
    """Resident writable pages: virtual address -> (physical frame, mapping name)."""
    found = {}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for start, end, name in writable_regions(pid):
            pagemap.seek(start // PAGE * 8)
            entries = struct.unpack(f"<{(end - start) // PAGE}Q", pagemap.read((end - start) // PAGE * 8))
            for index, entry in enumerate(entries):
                if entry & _PRESENT and entry & _FRAME:
                    found[start + index * PAGE] = (entry & _FRAME, name)
    return found


def _kinds(server: dict[int, tuple[int, str]], pid: int) -> Counter:
    kinds: Counter = Counter()
    with open("/proc/kpageflags", "rb") as flags:
        for address, (frame, _) in frames(pid).items():
            theirs = server.get(address)
            if theirs is None:
                kinds["new"] += 1
            elif theirs[0] == frame:
                kinds["shared"] += 1
            else:
                flags.seek(frame * 8)
                kinds["merged" if struct.unpack("<Q", flags.read(8))[0] & _KPF_KSM else "copied"] += 1
    return kinds


def _line(name: str, kinds: Counter) -> str:
    return f"{name:15} " + "  ".join(
        f"{kind} {kinds[kind] * PAGE / 2**20:6.1f} MB" for kind in ("shared", "merged", "copied", "new")
    )


def object_map() -> tuple[list[int], dict[int, tuple[int, str]]]:
    """This process's objects: sorted start addresses, and address -> (size, type name)."""
    import gc

    objects: dict[int, tuple[int, str]] = {}

    def add(thing: object, kind: str | None = None) -> None:
        objects.setdefault(id(thing), (sys.getsizeof(thing), kind or type(thing).__name__))

    for thing in gc.get_objects():
        add(thing)
        if type(thing).__name__ == "function":
            code = thing.__code__
            add(code)
            for constant in (*code.co_consts, *code.co_names):
                if not hasattr(constant, "__dict__"):
                    add(constant)
        elif isinstance(thing, dict):
            for key in thing:
                if type(key) is str:
                    add(key)
    return sorted(objects), objects


def objects_on(pages: list[int], starts: list[int], objects: dict[int, tuple[int, str]]) -> Counter:
    """Pages per kind of object on them (a page with several objects shared among their kinds)."""
    kinds: Counter = Counter()
    for page in pages:
        index = bisect.bisect_left(starts, page)
        here: Counter = Counter()
        if index and starts[index - 1] + objects[starts[index - 1]][0] > page:  # begins on the page before
            here[objects[starts[index - 1]][1]] += 1
        while index < len(starts) and starts[index] < page + PAGE:
            here[objects[starts[index]][1]] += 1
            index += 1
        here = here or Counter({"(no object known)": 1})
        for kind, count in here.items():
            kinds[kind] += count / sum(here.values())
    return kinds


def build_in_a_fork(service: str, *, by_object: bool = False) -> None:
    import gc
    import importlib
    import os
    import signal
    import tempfile

    from microshop_cli import forkserver

    package = f"microshop_{service}"
    forkserver.preload([*forkserver.PRELOAD, *forkserver.main_imports(package)])
    gc.collect()
    starts, objects = object_map() if by_object else ([], {})
    gc.freeze()
    server = frames(os.getpid())

    def build() -> None:
        os.environ.setdefault("MICROSHOP_DATA_DIR", tempfile.mkdtemp())
        importlib.import_module(f"{package}.bootstrap").build().app  # noqa: B018 - built, not served

    for name, work in (("did nothing", lambda: None), (f"built {service}", build)):
        ready, done = os.pipe()
        pid = os.fork()
        if pid == 0:
            work()
            os.write(done, b".")
            signal.pause()
        os.read(ready, 1)
        print(_line(name, _kinds(server, pid)))
        if by_object and work is build:
            copied = [address for address, (frame, _) in frames(pid).items()
                      if address in server and server[address][0] != frame]
            kinds = objects_on(copied, starts, objects)
            print("  the copied pages hold: " + ", ".join(
                f"{kind} {100 * pages / len(copied):.0f}%" for kind, pages in kinds.most_common(8)))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def main(data_dir: str, components: list[str]) -> None:
    state = json.loads(Path(data_dir, "run", "state.json").read_text())
    server = frames(state["fork_server_pid"])
    if not server:
        sys.exit("no frame numbers: run as root")
    for name, process in state["processes"].items():
        if components and name not in components:
            continue
        kinds = _kinds(server, process["pid"])
        if kinds["shared"] + kinds["copied"]:  # NATS is not a fork
            print(_line(name, kinds))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build_in_a_fork(sys.argv[2], by_object="--objects" in sys.argv[3:])
    else:
        main(sys.argv[1], sys.argv[2:])

"""Start the Python components by forking one process that has imported what they all use.

A service is ~100 MB of RSS, 95 % of it imports (FastAPI, Pydantic, SQLAlchemy, the OpenTelemetry
SDK, aiohttp, nats-py...), and importing them is most of its start. The launcher therefore starts
one *fork server* first: it imports those once, freezes its heap for the collector
(``gc.freeze()``, so no collection writes to the shared pages), and then forks a child per
``python -m <package>`` the launcher asks for. The children share the imported pages copy-on-write
(total PSS of the idle system: docs/performance.md) and start without importing them again.

What a child writes to is copied, and most of those copies stay byte for byte what the server
has (a reference count goes up and back down). With ``--merge-pages`` the server and its children
ask the kernel to merge identical pages again (KSM, ``PR_SET_MEMORY_MERGE``, Linux 6.4+): the
kernel's ``ksmd`` does it, when root has turned it on (``/sys/kernel/mm/ksm/run``), at the pace
set there.

Each child is what ``python -m <package>`` would be: its own session, its log file as stdout and
stderr, the environment the launcher gives it, the module run as ``__main__``. Every service can
still be started alone as its own process (that is how it deploys); ``MICROSHOP_FORK_SERVER=0``
makes the launcher start every component that way too.

The fork server is the launcher's child: it gets SIGTERM if the launcher dies and passes it on to
its children. It never runs a thread (a fork copies only the forking thread). Beyond the shared
packages it imports each component's own code (``--preload PACKAGE``: what that package's
``__main__`` imports, read from its source, never run), so that is shared too; importing a
component's modules has no side effects (settings are read, threads started and files opened
when its app is built, in the child).

Protocol, over a SOCK_SEQPACKET Unix socket (0600, in the private run folder), one connection
per child: the launcher sends ``{"module", "args", "env", "cwd"}`` with the log file's descriptor
attached; the server answers ``{"pid": N}``, and ``{"exit": CODE}`` when that child has exited.

Written here rather than taken from a library: multiprocessing's forkserver starts Python
functions with pickled arguments and owns the children's standard streams and lifetime; what is
needed is ``python -m`` semantics under the launcher's supervision.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import gc
import importlib
import importlib.util
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

# What every Python component imports; a missing one is skipped (a slimmer install).
PRELOAD = (
    "asyncio", "email.message", "email.policy", "json", "logging", "sqlite3", "ssl", "uuid",
    "aiohttp", "aiosqlite", "anyio", "argon2", "asyncpg", "cryptography.hazmat.primitives.asymmetric.ed25519",
    "duckdb", "fastapi", "fastapi.routing", "httptools", "jinja2", "jwt", "multidict", "nats", "nats.js",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry.sdk.trace",
    "opentelemetry.sdk.trace.export", "prometheus_client", "pydantic", "pydantic_settings", "sqlalchemy",
    "sqlalchemy.dialects.postgresql.asyncpg", "sqlalchemy.dialects.sqlite.aiosqlite", "sqlalchemy.ext.asyncio",
    "sqlalchemy.orm", "starlette.applications", "structlog", "uvicorn", "uvicorn.protocols.http.httptools_impl",
    "yarl",
    "microshop_chassis.host", "microshop_chassis.runner", "microshop_chassis.db", "microshop_chassis.outbox",
    "microshop_chassis.consumer", "microshop_chassis.inbox", "microshop_chassis.migrations",
    # Imported when an app is built or served, not when its modules are: the OTLP exporter's
    # requests session (requests, urllib3, charset_normalizer, certifi: 8 MB a child dirtied building
    # its app), the event loop and the WebSocket protocol uvicorn picks.
    "requests", "concurrent.futures.thread", "encodings.idna", "importlib.resources.readers",
    "uvloop", "uvicorn.protocols.websockets.websockets_sansio_impl",
)
# glibc malloc's settings for the server, and so for every child: a child inherits the allocator
# as it is at the fork (glibc reads these variables once, at a process's start: in a child's own
# environment they come too late). A fixed mmap threshold keeps glibc from raising it after a large
# block is freed, which left such blocks in a thread's arena for good (users' 19 MiB argon2
# buffer: 20 MB of its idle memory). Two arenas rather than one per thread (span export, SQLite and
# argon2 workers, libuv's pool), whose touched pages stay with the process; the Python code runs
# in one thread. The caller's own MALLOC_* settings win.
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}
MAX_MESSAGE = 256 * 1024
# At its stop, how long the server lets its children drain (as the launcher does) before SIGKILL.
CHILDREN_STOP_SECONDS = 15.0
CHILD_UMASK = 0o077
PR_SET_PDEATHSIG = 1
PR_SET_MEMORY_MERGE = 67  # linux/prctl.h, Linux 6.4+
KSM_RUN = Path("/sys/kernel/mm/ksm/run")


def preload(names: Sequence[str] = PRELOAD) -> list[str]:
    """Import ``names`` (what the components share, by default); those that could not be imported."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - that component fails in its own process, the traceback in its log
            missing.append(name)
    return missing


def main_imports(package: str) -> list[str]:
    """The modules ``python -m package`` imports at its top level, read from its source, not run;
    none for a module that is not a package (run as ``__main__``, it must not be imported before)."""
    modules: list[str] = []
    try:
        spec = importlib.util.find_spec(f"{package}.__main__")
        for node in ast.parse(spec.loader.get_source(spec.name)).body:
            if isinstance(node, ast.Import):
                modules += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                # `from . import store` imports a module; `from .app import create_app` a name in one.
                submodules = importlib.util.find_spec(base).submodule_search_locations is not None
                modules += [base, *(f"{base}.{alias.name}" for alias in node.names
                                    if submodules and importlib.util.find_spec(f"{base}.{alias.name}"))]
    except Exception:  # noqa: BLE001 - not a package, or broken: its child will say so in its log
        pass
    return modules


def serve(path: Path, packages: Sequence[str] = (), *, merge_pages: bool = False) -> None:
    """Import what the components share and the code of those in ``packages``, then accept requests
    on ``path`` until SIGTERM, forking a child for each. Everything is imported before the first
    fork: an import after it would write to pages a child shares, each write a copy."""
    _die_with_parent()
    missing = preload([*PRELOAD, *(module for package in packages for module in main_imports(package))])
    gc.collect()
    gc.freeze()
    not_merged = _merge_pages() if merge_pages else None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    stopping = False

    def stop(_signal: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd hears of exits
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    print(json.dumps({"event": "fork_server_ready", "pid": os.getpid(), "not_preloaded": missing,
                      **({"merge_pages": not_merged or "on"} if merge_pages else {})}), flush=True)
    while not stopping:
        for key, _ in selector.select():
            if key.fileobj is listener:
                _accept(listener, children, closing=[listener, selector, wake_read, wake_write])
            else:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 4096)
        _reap(children)
    # The launcher is gone or stopping: so are the children, each drained as a stop asks, then killed.
    selector.unregister(listener)
    listener.close()
    for number, grace in ((signal.SIGTERM, CHILDREN_STOP_SECONDS), (signal.SIGKILL, CHILDREN_STOP_SECONDS)):
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, number)
        deadline = time.monotonic() + grace
        while children and time.monotonic() < deadline:
            selector.select(timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
            _reap(children)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _accept(listener: socket.socket, children: dict[int, socket.socket], closing: list) -> None:
    connection, _ = listener.accept()
    try:
        message, fds, _flags, _address = socket.recv_fds(connection, MAX_MESSAGE, 1)
        request = json.loads(message)
        if len(fds) != 1:
            raise ValueError("a request carries its log file's descriptor")
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            connection.send(json.dumps({"error": str(exc)}).encode())
        connection.close()
        return
    settled_read, settled_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(settled_read)
        _run_child(request, fds[0], [connection, *children.values(), *closing], settled=settled_write)
    os.close(fds[0])
    os.close(settled_write)
    os.read(settled_read, 1)  # its own session first: the launcher signals the pid's process group
    os.close(settled_read)
    connection.send(json.dumps({"pid": pid}).encode())
    children[pid] = connection


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            connection.close()


def _run_child(request: dict, log_fd: int, inherited: list, *, settled: int) -> None:
    """In the forked child: become ``python -m MODULE ARGS`` with its own session, log and
    environment, and never return."""
    code = 1
    try:
        for item in inherited:  # the server's sockets, pipes and selector are not the child's
            with contextlib.suppress(OSError):
                item.close() if hasattr(item, "close") else os.close(item)
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(number, signal.SIG_DFL)
        os.setsid()
        os.write(settled, b"1")
        os.close(settled)
        os.umask(CHILD_UMASK)
        _die_with_parent()
        with open(os.devnull, "rb") as devnull:
            os.dup2(devnull.fileno(), 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        sys.stdout.reconfigure(line_buffering=True)
        os.chdir(request.get("cwd") or "/")
        sys.path[0] = os.getcwd()  # as `python -m` puts its working directory first
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [request["module"], *request.get("args", [])]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """SIGTERM when the parent dies (Linux): the server when the launcher dies, a child when the
    server does."""
    if sys.platform != "linux":
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _merge_pages() -> str | None:
    """Opt this process, and the children it will fork (they inherit it), into the kernel's merging
    of identical pages. None when done, else why not. ctypes: the standard library has no prctl,
    and the one PyPI package for it (python-prctl) predates this option."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def ksm_running() -> bool:
    """Whether the kernel merges pages (root turns it on: ``echo 1 > /sys/kernel/mm/ksm/run``)."""
    try:
        return KSM_RUN.read_text().strip() == "1"
    except OSError:
        return False


# --- the launcher's side ------------------------------------------------------------------------


class ForkedProcess:
    """A child of the fork server, seen as the launcher sees its own children (the part of
    ``asyncio.subprocess.Process`` it uses): ``pid``, ``returncode``, ``wait()``."""

    def __init__(self, pid: int, connection: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._connection = connection
        self._exited = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.sock_recv(self._connection, 4096)
            self.returncode = json.loads(answer)["exit"] if answer else -signal.SIGKILL
        except (OSError, ValueError, KeyError):
            self.returncode = -signal.SIGKILL  # the server is gone: so is the child (it dies with it)
        finally:
            self._connection.close()

    async def wait(self) -> int:
        await asyncio.shield(self._exited)
        return self.returncode

    def send_signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


async def fork(path: Path, module: str, args: list[str], env: dict[str, str], log_fd: int) -> ForkedProcess:
    """Ask the fork server at ``path`` for ``python -m module args`` (OSError when it cannot)."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(connection, str(path))
        request = json.dumps({"module": module, "args": args, "env": env, "cwd": os.getcwd()}).encode()
        connection.setblocking(True)
        socket.send_fds(connection, [request], [log_fd])
        connection.setblocking(False)
        answer = json.loads(await asyncio.wait_for(loop.sock_recv(connection, 4096), 10))
    except BaseException:
        connection.close()
        raise
    if "pid" not in answer:
        connection.close()
        raise OSError(f"the fork server refused: {answer.get('error')}")
    return ForkedProcess(answer["pid"], connection)


def python_module(command: list[str] | tuple[str, ...]) -> tuple[str, list[str]] | None:
    """``[sys.executable, "-m", MODULE, *args]`` -> (MODULE, args); None for any other command."""
    if len(command) >= 3 and command[0] == sys.executable and command[1] == "-m":
        return command[2], list(command[3:])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--preload", action="append", default=[], metavar="PACKAGE",
                        help="a component's package, to import what its __main__ imports (repeatable)")
    parser.add_argument("--merge-pages", action="store_true",
                        help="let the kernel merge the identical pages of this server and its children (KSM)")
    arguments = parser.parse_args()
    serve(arguments.socket, arguments.preload, merge_pages=arguments.merge_pages)


if __name__ == "__main__":
    main()

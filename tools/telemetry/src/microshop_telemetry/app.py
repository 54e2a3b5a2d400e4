"""The receiver's HTTP face: OTLP/HTTP ``POST /v1/traces``, the query API, ``/health``, and the
operations console's pages (console.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParameter
from microshop_chassis.errors import Problem, install_problem_handlers, problem_response

from . import __version__, otlp
from .chaos_console import create_chaos_console
from .console import create_console, static_files
from .scrape import MetricsHistory
from .scraper import Scraper
from .services_console import create_services_console
from .store import SpanStore

log = structlog.get_logger("microshop.telemetry")

T = TypeVar("T")
TRACE_ID_PATTERN = "^[0-9a-fA-F]{32}$"


@dataclass(frozen=True)
class ReceiverConfig:
    db_path: str | Path
    retention_seconds: float = 3600.0
    max_spans: int = 500_000
    prune_interval_seconds: float = 30.0
    # An exporter's batch is 512 spans by default, well under a megabyte: 8 MiB leaves room for
    # large attributes while bounding what one request can make the receiver hold.
    max_body_bytes: int = 8 * 1024 * 1024
    # The data dir's logs folder: the console shows a trace's log lines from its files.
    logs_dir: str | Path | None = None
    # The supervisor's control socket: the chaos page injects faults and runs verify through it.
    control_socket: str | Path | None = None
    # A Prometheus file_sd JSON file (the launcher's run/scrape-targets.json): every target's
    # /metrics is scraped each interval and kept for the services page. None: no scraping.
    scrape_targets: str | Path | None = None
    scrape_interval_seconds: float = 5.0
    scrape_keep_seconds: float = 1800.0


class StoreThread:
    """The span store, used from one thread of its own: a sqlite3 connection belongs to the
    thread that made it, SQLite has one writer anyway, and a batch insert or a prune then never
    holds the event loop. Reads queue behind writes, which is plenty for one machine's telemetry."""

    def __init__(self, config: ReceiverConfig) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="span-store")
        self._config = config
        self.store: SpanStore | None = None

    async def open(self) -> None:
        self.store = await self._run(SpanStore, self._config.db_path)

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self._run(functools.partial(method, *args, **kwargs))

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def close(self) -> None:
        if self.store is not None:
            await self._run(self.store.close)
        self._executor.shutdown(wait=True)


def create_app(config: ReceiverConfig) -> FastAPI:
    spans = StoreThread(config)
    history = MetricsHistory(config.scrape_keep_seconds) if config.scrape_targets else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await spans.open()
        pruning = asyncio.create_task(_prune_forever(spans, config), name="prune-spans")
        scraping = None
        if history is not None and config.scrape_targets:
            scraper = Scraper(Path(config.scrape_targets), history, interval=config.scrape_interval_seconds)
            scraping = asyncio.create_task(scraper.run_forever(), name="scrape-metrics")
        try:
            yield
        finally:
            for task in (pruning, scraping):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await spans.close()

    app = FastAPI(title="microshop telemetry", version=__version__, lifespan=lifespan,
                  description="OTLP/HTTP trace receiver and span store of a local microshop.")
    install_problem_handlers(app)
    app.state.spans = spans
    app.include_router(create_console(Path(config.logs_dir) if config.logs_dir else None))
    app.include_router(create_chaos_console(Path(config.control_socket) if config.control_socket else None))
    app.include_router(create_services_console(history, config.scrape_interval_seconds))
    app.mount("/static", static_files, name="console-static")

    @app.post("/v1/traces", summary="OTLP/HTTP trace export (protobuf or JSON)")
    async def export_traces(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in otlp.ENCODINGS:
            return problem_response(Problem(415, f"send {otlp.PROTOBUF} or {otlp.JSON}, not {media_type!r}"),
                                    request.url.path)
        try:
            body = otlp.decompress(await _read_bounded(request, config.max_body_bytes),
                                   request.headers.get("content-encoding", ""), config.max_body_bytes)
        except otlp.TooLarge as exc:
            return _status(413, otlp.RESOURCE_EXHAUSTED, str(exc), media_type)
        except otlp.BadPayload as exc:
            return _status(400, otlp.INVALID_ARGUMENT, str(exc), media_type)
        except ValueError as exc:  # a content coding we do not speak
            return problem_response(Problem(415, str(exc)), request.url.path)
        try:
            message = otlp.decode_request(body, media_type)
        except otlp.BadPayload as exc:
            return _status(400, otlp.INVALID_ARGUMENT, str(exc), media_type)
        rows, rejected = otlp.span_rows(message)
        if rows:
            await spans.call(spans.store.add, rows)
        reason = f"{rejected} spans without a valid trace id or span id" if rejected else ""
        return Response(otlp.export_response(rejected, reason, media_type), media_type=media_type)

    @app.get("/api/traces", summary="Trace summaries, newest first")
    async def find_traces(
        order_id: str | None = None,
        trace_id: Annotated[str | None, Query(pattern=TRACE_ID_PATTERN)] = None,
        service: str | None = None,
        error: bool | None = None,
        min_duration_ms: Annotated[float | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        return await spans.call(spans.store.traces, order_id=order_id, trace_id=trace_id, service=service,
                                error=error, min_duration_ms=min_duration_ms, limit=limit)

    @app.get("/api/traces/{trace_id}", summary="Every span of a trace, in the order they started")
    async def get_trace(trace_id: Annotated[str, PathParameter(pattern=TRACE_ID_PATTERN)]) -> dict[str, Any]:
        found = await spans.call(spans.store.trace, trace_id)
        if not found:
            raise Problem(404, f"no span of trace {trace_id} is kept (not sampled, never received, or pruned)",
                          type="trace-not-found", title="Trace not found")
        return {"trace_id": trace_id.lower(), "spans": found}

    @app.get("/health", summary="Whether the receiver and its store answer")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "spans": await spans.call(spans.store.count)}

    return app


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise otlp.TooLarge(f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise otlp.TooLarge(f"the body is over {limit} bytes")
    return bytes(body)


def _status(http_status: int, code: int, message: str, media_type: str) -> Response:
    """An OTLP error answer: a google.rpc.Status in the request's encoding, as the spec asks."""
    return Response(otlp.status_body(code, message, media_type), status_code=http_status, media_type=media_type)


async def _prune_forever(spans: StoreThread, config: ReceiverConfig) -> None:
    while True:
        try:
            removed = await spans.call(spans.store.prune, time.time_ns(), config.retention_seconds,
                                       config.max_spans)
            if removed:
                log.info("spans_pruned", removed=removed)
        except Exception:  # a failed round (disk full...) must not end pruning for good
            log.exception("span_prune_failed")
        await asyncio.sleep(config.prune_interval_seconds)

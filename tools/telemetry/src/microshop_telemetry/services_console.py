"""The console's services page: each service's RED figures over time (uPlot charts fed by
``/api/services``), and, server-rendered, its current figures, circuit breakers, outbox, consumer
lag, dead letters and replicas, from the scraper's history of the services' ``/metrics``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from .console import templates
from .scrape import MetricsHistory, services_report

# The current figures (the tables) are over this last stretch; the charts show every kept round.
DEFAULT_WINDOW_SECONDS = 60.0


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _moment(unix_seconds: float | None) -> str:
    return "–" if unix_seconds is None else datetime.fromtimestamp(unix_seconds, UTC).strftime("%H:%M:%S")


templates.env.filters["number"] = _number
templates.env.filters["moment"] = _moment


def create_services_console(history: MetricsHistory | None, scrape_interval: float) -> APIRouter:
    """``history`` None: the component scrapes nothing (no targets file), and the page says so."""
    router = APIRouter()

    def report(window_seconds: float) -> dict[str, Any]:
        now = time.time()
        rounds = list(history.rounds) if history else []
        return {
            "scraping": history is not None, "scrape_interval": scrape_interval, "window_seconds": window_seconds,
            "kept_seconds": history.keep_seconds if history else 0.0, "now": now,
            "last_round": rounds[-1].at if rounds else None, "rounds": len(rounds),
            "services": services_report(history, now, window_seconds) if history else [],
        }

    @router.get("/api/services", summary="Each service's RED series, current figures, messaging and replicas, "
                                         "from its scraped /metrics")
    async def services_figures(
        window_seconds: Annotated[float, Query(gt=0, le=3600)] = DEFAULT_WINDOW_SECONDS,
    ) -> dict[str, Any]:
        return report(window_seconds)

    @router.get("/services", response_class=HTMLResponse, include_in_schema=False)
    async def services_page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "services.html", report(DEFAULT_WINDOW_SECONDS))

    return router

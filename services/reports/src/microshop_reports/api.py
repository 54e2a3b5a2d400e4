"""reports' HTTP API: admin-only reads of the read model, and its rebuild. The domain's errors
become problem+json here, once (``ERRORS``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter

from microshop_chassis.auth import AdminUser
from microshop_chassis.errors import FORBIDDEN, UNAUTHORIZED, ProblemMap, ProblemType, problem_responses
from microshop_chassis.provide import Provide

from .domain import BrokerUnavailable, RebuildInProgress, ReplayFailed
from .schemas import RebuildResult, ReportStatus, SalesReport
from .service import Reports

REBUILD_IN_PROGRESS = ProblemType("rebuild-in-progress", 409, "Rebuild in progress")
BROKER_UNAVAILABLE = ProblemType("broker-unavailable", 503, "Broker unavailable")
REPLAY_FAILED = ProblemType("replay-failed", 503, "Replay failed")

ERRORS: ProblemMap = {
    RebuildInProgress: REBUILD_IN_PROGRESS,
    BrokerUnavailable: BROKER_UNAVAILABLE,
    ReplayFailed: REPLAY_FAILED,
}

router = APIRouter(tags=["reports"])
ReportsDep = Annotated[Reports, Provide(Reports)]

_ADMIN_ONLY = ((UNAUTHORIZED, "no valid bearer token"), (FORBIDDEN, "not an admin"))


@router.get("/sales", response_model=SalesReport, summary="Sales figures, net of cancellations (admin)",
            responses=problem_responses(*_ADMIN_ONLY))
async def sales(_: AdminUser, reports: ReportsDep) -> SalesReport:
    """Orders CONFIRMED now, their revenue and units, per product; plus counts of the other states
    and payment totals. Built from events, so it trails the orders service by the consumer's lag."""
    return SalesReport(**asdict(await reports.sales()))


@router.post("/rebuild", response_model=RebuildResult,
             summary="Rebuild the read model by replaying every event (admin)",
             responses=problem_responses(
                 *_ADMIN_ONLY,
                 (REBUILD_IN_PROGRESS, "a rebuild is already running"),
                 (BROKER_UNAVAILABLE, "not connected to the broker; the old model stays"),
                 (REPLAY_FAILED, "the replay failed; the old model stays"),
             ))
async def rebuild(_: AdminUser, reports: ReportsDep) -> RebuildResult:
    """Pause the durable consumer, replay the stream from its first message into fresh tables, swap
    them in, resume. Reads keep seeing the old model until the swap."""
    return RebuildResult(**asdict(await reports.rebuild()))


@router.get("/status", response_model=ReportStatus, summary="How current the read model is (admin)",
            responses=problem_responses(*_ADMIN_ONLY))
async def status(_: AdminUser, reports: ReportsDep) -> ReportStatus:
    """Events applied, when the newest occurred, the model's schema version and the consumer's lag."""
    return ReportStatus(**asdict(await reports.status()))

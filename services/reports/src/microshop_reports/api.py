"""reports' HTTP API: admin-only reads of the read model, and its rebuild."""

from __future__ import annotations

from fastapi import APIRouter, Request

from microshop_chassis.auth import AdminUser

from .schemas import RebuildResult, ReportStatus, SalesReport

router = APIRouter(tags=["reports"])

_ADMIN_ONLY = {401: {"description": "No valid bearer token"}, 403: {"description": "Not an admin"}}


@router.get("/sales", response_model=SalesReport, summary="Sales figures, net of cancellations (admin)",
            responses=_ADMIN_ONLY)
async def sales(_: AdminUser, request: Request) -> SalesReport:
    """Orders CONFIRMED now, their revenue and units, per product; plus counts of the other states
    and payment totals. Built from events, so it trails the orders service by the consumer's lag."""
    return await request.app.state.reports.sales()


@router.post("/rebuild", response_model=RebuildResult,
             summary="Rebuild the read model by replaying every event (admin)",
             responses={**_ADMIN_ONLY, 409: {"description": "A rebuild is already running"},
                        503: {"description": "Broker unavailable, or the replay failed (the old model stays)"}})
async def rebuild(_: AdminUser, request: Request) -> RebuildResult:
    """Pause the durable consumer, replay the stream from its first message into fresh tables, swap
    them in, resume. Reads keep seeing the old model until the swap."""
    return await request.app.state.reports.rebuild()


@router.get("/status", response_model=ReportStatus, summary="How current the read model is (admin)",
            responses=_ADMIN_ONLY)
async def status(_: AdminUser, request: Request) -> ReportStatus:
    """Events applied, when the newest occurred, the model's schema version and the consumer's lag."""
    return await request.app.state.reports.status()

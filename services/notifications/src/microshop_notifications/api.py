"""notifications' HTTP API: read-only; notifications are made from events, not by requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from microshop_chassis.auth import CurrentUser
from microshop_chassis.errors import Problem
from microshop_chassis.pagination import Page, Paging

from . import service
from .domain import NotificationType
from .schemas import NotificationDetail, NotificationSummary

router = APIRouter(tags=["notifications"])

_AUTH_ERRORS = {401: {"description": "No valid bearer token"}}


@router.get(
    "/notifications",
    response_model=Page[NotificationSummary],
    summary="Notifications, newest first: your own, or everyone's for an admin",
    responses=_AUTH_ERRORS,
)
async def list_notifications(
    principal: CurrentUser,
    paging: Paging,
    request: Request,
    type: Annotated[NotificationType | None, Query(description="Only this kind of notification.")] = None,  # noqa: A002
    order_id: Annotated[str | None, Query(max_length=100, description="Only notifications about this order.")] = None,
) -> Page[NotificationSummary]:
    rows, total = await service.list_notifications(
        request.app.state.db,
        user_id=None if principal.is_admin else principal.id,
        type=type,
        order_id=order_id,
        limit=paging.limit,
        offset=paging.offset,
    )
    return Page(items=[NotificationSummary.model_validate(row, from_attributes=True) for row in rows], total=total)


@router.get(
    "/notifications/{notification_id}",
    response_model=NotificationDetail,
    summary="One notification with its recipient and body",
    responses={**_AUTH_ERRORS, 404: {"description": "No such notification, or not yours"}},
)
async def get_notification(notification_id: str, principal: CurrentUser, request: Request) -> NotificationDetail:
    row = await service.get_notification(request.app.state.db, notification_id)
    # Someone else's notification is answered exactly like a missing one: ids are not disclosed.
    if row is None or not (principal.is_admin or row.user_id == principal.id):
        raise Problem(404, f"No notification {notification_id}.", type="not-found")
    detail = NotificationDetail.model_validate(row, from_attributes=True)
    if not principal.is_admin:
        detail.last_error = None  # SMTP errors name internal hosts: operators' business only
    return detail

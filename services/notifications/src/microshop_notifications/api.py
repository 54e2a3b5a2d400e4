"""notifications' HTTP API: read-only; notifications are made from events, not by requests.
Routes translate HTTP to the use cases of service.py and back; the domain's errors become
problem+json here, once (``ERRORS``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from microshop_chassis.auth import CurrentUser
from microshop_chassis.errors import UNAUTHORIZED, ProblemMap, ProblemType, problem_responses
from microshop_chassis.pagination import Page, Paging
from microshop_chassis.provide import Provide

from .domain import NotificationNotFound, NotificationType
from .schemas import NotificationDetail, NotificationSummary
from .service import Notifications

NOTIFICATION_NOT_FOUND = ProblemType("not-found", 404, "No such notification")

ERRORS: ProblemMap = {NotificationNotFound: NOTIFICATION_NOT_FOUND}

router = APIRouter(tags=["notifications"])
NotificationsDep = Annotated[Notifications, Provide(Notifications)]

_NO_TOKEN = (UNAUTHORIZED, "no valid bearer token")


@router.get(
    "/notifications",
    response_model=Page[NotificationSummary],
    summary="Notifications, newest first: your own, or everyone's for an admin",
    responses=problem_responses(_NO_TOKEN),
)
async def list_notifications(
    viewer: CurrentUser,
    paging: Paging,
    notifications: NotificationsDep,
    type: Annotated[NotificationType | None, Query(description="Only this kind of notification.")] = None,  # noqa: A002
    order_id: Annotated[str | None, Query(max_length=100, description="Only notifications about this order.")] = None,
) -> Page[NotificationSummary]:
    found, total = await notifications.list(viewer, type=type, order_id=order_id, limit=paging.limit,
                                            offset=paging.offset)
    return Page(items=[NotificationSummary.model_validate(n, from_attributes=True) for n in found], total=total)


@router.get(
    "/notifications/{notification_id}",
    response_model=NotificationDetail,
    summary="One notification with its recipient and body",
    responses=problem_responses(_NO_TOKEN, (NOTIFICATION_NOT_FOUND, "no such notification, or not yours")),
)
async def get_notification(
    notification_id: str, viewer: CurrentUser, notifications: NotificationsDep
) -> NotificationDetail:
    notification = await notifications.get(viewer, notification_id)
    detail = NotificationDetail.model_validate(notification, from_attributes=True)
    if not viewer.is_admin:
        detail.last_error = None  # SMTP errors name internal hosts: operators' business only
    return detail

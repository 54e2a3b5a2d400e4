"""notifications' use cases: plain async functions over the database; HTTP and SMTP only translate."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import structlog
from microshop_chassis.db import Database
from microshop_chassis.events import Event
from microshop_chassis.tables import insert_ignoring_duplicates
from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .domain import (
    TYPE_FOR_EVENT,
    DeliveryStatus,
    Draft,
    InvalidEvent,
    LineItem,
    NotificationType,
    order_mail,
    retry_delay,
    welcome,
)
from .models import Notification
from .schemas import OrderEventData, UserRegisteredData

log = structlog.get_logger("microshop.notifications")

# --- turning events into notifications --------------------------------------------------------


def draft_for(event: Event) -> Draft:
    """The notification an event asks for, or InvalidEvent when its data breaks the contract."""
    kind = TYPE_FOR_EVENT.get(event.type)
    if kind is None:
        raise InvalidEvent(f"notifications does not handle {event.type} events")
    try:
        if kind is NotificationType.WELCOME:
            user = UserRegisteredData.model_validate(event.data)
            return welcome(user_id=user.user_id, email=user.email, name=user.name)
        order = OrderEventData.model_validate(event.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidEvent(f"{event.type} data breaks its contract: {where}: {first['msg']}") from exc
    return order_mail(
        kind,
        order_id=order.order_id,
        customer_id=order.customer_id,
        email=order.customer_email,
        items=[LineItem(i.sku, i.quantity, i.unit_price_cents) for i in order.items],
        total_cents=order.total_cents,
        currency=order.currency,
        payment_id=order.payment_id,
        reason=order.reason,
    )


async def record(session: AsyncSession, event: Event, *, draft: Draft) -> None:
    """Store ``draft`` as PENDING in the caller's (inbox) transaction.

    The insert ignores a clash on event_id or on (type, order_id): a second event for the same
    order outcome is a duplicate, not an error worth retrying.
    """
    now = datetime.now(UTC)
    statement = insert_ignoring_duplicates(
        session.bind.dialect.name,
        Notification.__table__,
        {
            "id": str(uuid.uuid4()),
            "event_id": event.id,
            "type": draft.type.value,
            "user_id": draft.user_id,
            "order_id": draft.order_id,
            "recipient": draft.recipient,
            "subject": draft.subject,
            "body": draft.body,
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "last_error": None,
            "next_attempt_at": now,
            "created_at": now,
            "sent_at": None,
        },
    )
    if (await session.execute(statement)).rowcount == 0:
        log.info("notification_duplicate_skipped", event_id=event.id, type=draft.type.value,
                 order_id=draft.order_id)


# --- reading ------------------------------------------------------------------------------------


async def list_notifications(
    db: Database,
    *,
    user_id: str | None,
    type: NotificationType | None,  # noqa: A002 - the query parameter's name
    order_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Notification], int]:
    """Newest first. ``user_id=None`` means everyone's (admins)."""
    filters = []
    if user_id is not None:
        filters.append(Notification.user_id == user_id)
    if type is not None:
        filters.append(Notification.type == type.value)
    if order_id is not None:
        filters.append(Notification.order_id == order_id)
    async with db.session() as session:
        total = (await session.execute(select(func.count()).select_from(Notification).where(*filters))).scalar_one()
        rows = await session.scalars(
            select(Notification)
            .where(*filters)
            .order_by(Notification.created_at.desc(), Notification.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return list(rows), total


async def get_notification(db: Database, notification_id: str) -> Notification | None:
    async with db.session() as session:
        return await session.get(Notification, notification_id)


async def pending_count(db: Database) -> int:
    async with db.session() as session:
        return (
            await session.execute(
                select(func.count()).select_from(Notification).where(Notification.status == DeliveryStatus.PENDING)
            )
        ).scalar_one()


# --- delivery bookkeeping (used by the delivery worker) ----------------------------------------


async def claim_due(db: Database, *, limit: int, lease_seconds: float) -> list[Notification]:
    """Take the oldest PENDING notifications that are due, and lease them for ``lease_seconds``.

    Leasing (moving next_attempt_at into the future) in one UPDATE keeps replicas sharing a
    PostgreSQL database from sending the same mail, without holding a transaction during SMTP.
    A worker that dies mid-batch leaves its lease to expire; then the rows are due again.
    """
    now = datetime.now(UTC)
    is_due = (Notification.status == DeliveryStatus.PENDING, Notification.next_attempt_at <= now)
    oldest_due = (
        select(Notification.id)
        .where(*is_due)
        .order_by(Notification.created_at, Notification.id)
        .limit(limit)
        .scalar_subquery()
    )
    async with db.transaction() as session:
        claimed = await session.scalars(
            update(Notification)
            # Due is checked again on the row itself: a concurrent claim may have moved it.
            .where(Notification.id.in_(oldest_due), *is_due)
            .values(next_attempt_at=now + timedelta(seconds=lease_seconds))
            .returning(Notification)
            .execution_options(synchronize_session=False)
        )
        batch = list(claimed)
    return sorted(batch, key=lambda n: (n.created_at, n.id))  # RETURNING has no order


async def mark_sent(db: Database, notification_id: str) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(status=DeliveryStatus.SENT.value, sent_at=datetime.now(UTC))
        )


async def mark_failed(
    db: Database, notifications: Sequence[Notification], error: str, *, backoff: float, backoff_max: float
) -> None:
    """Count a failed attempt on each and schedule its retry; the rows stay PENDING, never lost."""
    if not notifications:
        return
    now = datetime.now(UTC)
    changes = []
    for notification in notifications:
        attempts = notification.attempts + 1  # safe: we hold the lease on these rows
        delay = retry_delay(attempts, base=backoff, cap=backoff_max)
        changes.append({
            "id": notification.id,
            "attempts": attempts,
            "last_error": error[:500],
            "next_attempt_at": now + timedelta(seconds=delay),
        })
    async with db.transaction() as session:
        await session.execute(update(Notification), changes)  # bulk UPDATE by primary key

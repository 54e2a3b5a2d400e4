"""notifications' use cases: record a notification from an event, read them, and the delivery
bookkeeping the delivery worker does around each attempt.

Returns notifications as stored (``models.Notification``); refusals are the domain errors of
domain.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from functools import partial

import structlog
from microshop_chassis.auth import Principal
from microshop_chassis.db import Database, utcnow
from microshop_chassis.events import Event
from microshop_chassis.inbox import with_inbox
from microshop_chassis.tables import insert_or_ignore
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .domain import DeliveryStatus, Draft, NotificationNotFound, NotificationType, retry_delay
from .events import draft_for
from .models import Notification

log = structlog.get_logger("microshop.notifications")

# Statements on a checkout's path are built once, their values given at execution: building one
# costs more than running it (docs/performance.md, "Prebuilt statements"). On the table, not the
# model: the ORM's bulk path costs more again, and these calls load no object.
_notifications = Notification.__table__
_MARK_SENT = (
    update(_notifications)
    .where(_notifications.c.id == bindparam("notification_id"))
    .values(status=DeliveryStatus.SENT.value, sent_at=bindparam("now"))
)


def _claim(*, ignore_leases: bool):
    """Lease the oldest due PENDING rows (``limit`` of them) until ``lease_until``, returning them."""
    columns = _notifications.c
    is_due = (columns.status == DeliveryStatus.PENDING.value,
              *(() if ignore_leases else (columns.next_attempt_at <= bindparam("now"),)))
    oldest_due = (select(columns.id).where(*is_due).order_by(columns.created_at, columns.id)
                  .limit(bindparam("limit")).scalar_subquery())
    # Due is checked again on the row itself: a concurrent claim may have moved it.
    return (update(_notifications).where(columns.id.in_(oldest_due), *is_due)
            .values(next_attempt_at=bindparam("lease_until")).returning(*_notifications.columns))


_CLAIM_DUE = _claim(ignore_leases=False)
_CLAIM_EVERY_PENDING = _claim(ignore_leases=True)


class Notifications:
    def __init__(self, db: Database, *, consumer: str, retry_backoff: float, retry_backoff_max: float) -> None:
        """``consumer`` names the inbox that records each event handled; after a failed attempt a
        message waits ``retry_backoff * 2^(attempts-1)`` seconds, at most ``retry_backoff_max``."""
        self.db = db
        self.consumer = consumer
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max

    # --- turning events into notifications ----------------------------------------------------

    async def record(self, event: Event) -> None:
        """Store the notification ``event`` asks for as PENDING, once per event (the inbox, in the
        same transaction); InvalidEvent when its data breaks the contract."""
        draft = draft_for(event)
        await with_inbox(self.db, self.consumer, partial(self._insert, draft=draft))(event)

    async def _insert(self, session: AsyncSession, event: Event, *, draft: Draft) -> None:
        # The insert ignores a clash on event_id or on (type, order_id): a second event for the
        # same order outcome is a duplicate, not an error worth retrying.
        now = utcnow()
        result = await session.execute(
            insert_or_ignore(session.bind.dialect.name, Notification.__table__),
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
        if result.rowcount == 0:
            log.info("notification_duplicate_skipped", event_id=event.id, type=draft.type.value,
                     order_id=draft.order_id)

    # --- reading --------------------------------------------------------------------------------

    async def list(
        self,
        viewer: Principal,
        *,
        type: NotificationType | None,  # noqa: A002 - the query parameter's name
        order_id: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Notification], int]:
        """Newest first: the viewer's own, or everyone's for an admin."""
        filters = []
        if not viewer.is_admin:
            filters.append(Notification.user_id == viewer.id)
        if type is not None:
            filters.append(Notification.type == type.value)
        if order_id is not None:
            filters.append(Notification.order_id == order_id)
        async with self.db.session() as session:
            total = (await session.execute(select(func.count()).select_from(Notification).where(*filters))).scalar_one()
            rows = await session.scalars(
                select(Notification)
                .where(*filters)
                .order_by(Notification.created_at.desc(), Notification.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return list(rows), total

    async def get(self, viewer: Principal, notification_id: str) -> Notification:
        """One notification, the viewer's own or any for an admin; NotificationNotFound otherwise."""
        async with self.db.session() as session:
            notification = await session.get(Notification, notification_id)
        if notification is None or not (viewer.is_admin or notification.user_id == viewer.id):
            raise NotificationNotFound(notification_id)
        return notification

    async def pending_count(self) -> int:
        async with self.db.session() as session:
            return (
                await session.execute(
                    select(func.count()).select_from(Notification).where(Notification.status == DeliveryStatus.PENDING)
                )
            ).scalar_one()

    # --- delivery bookkeeping (the delivery worker's) -------------------------------------------

    async def claim_due(self, *, limit: int, lease_seconds: float, ignore_leases: bool = False) -> list[Notification]:
        """Take the oldest PENDING notifications that are due, and lease them for ``lease_seconds``.

        Leasing (moving next_attempt_at into the future) in one UPDATE keeps replicas sharing a
        PostgreSQL database from sending the same mail, without holding a transaction during SMTP.
        A worker that dies mid-batch leaves its lease to expire; then the rows are due again.
        ``ignore_leases`` takes every PENDING row, leased or waiting for a retry: for the only
        process of a database (SQLite) at its start, whose predecessor's leases are a dead one's.
        """
        now = utcnow()
        params = {"now": now, "limit": limit, "lease_until": now + timedelta(seconds=lease_seconds)}
        async with self.db.transaction() as session:
            claimed = await session.execute(_CLAIM_EVERY_PENDING if ignore_leases else _CLAIM_DUE, params)
            batch = [Notification(**row._mapping) for row in claimed]
        return sorted(batch, key=lambda n: (n.created_at, n.id))  # RETURNING has no order

    async def renew_lease(self, notification_ids: Sequence[str], lease_seconds: float) -> None:
        """Hold these (still PENDING) rows ``lease_seconds`` longer: a worker going through its
        batch renews before each send, so the lease can be short and a dead worker's rows come
        due soon, without a live one's ever running out."""
        if not notification_ids:
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(Notification)
                .where(Notification.id.in_(notification_ids), Notification.status == DeliveryStatus.PENDING)
                .values(next_attempt_at=utcnow() + timedelta(seconds=lease_seconds))
            )

    async def mark_sent(self, notification_id: str) -> None:
        async with self.db.transaction() as session:
            await session.execute(_MARK_SENT, {"notification_id": notification_id, "now": utcnow()})

    async def mark_failed(self, notifications: Sequence[Notification], error: str) -> None:
        """Count a failed attempt on each and schedule its retry; the rows stay PENDING, never lost."""
        if not notifications:
            return
        now = utcnow()
        changes = []
        for notification in notifications:
            attempts = notification.attempts + 1  # safe: we hold the lease on these rows
            delay = retry_delay(attempts, base=self.retry_backoff, cap=self.retry_backoff_max)
            changes.append({
                "id": notification.id,
                "attempts": attempts,
                "last_error": error[:500],
                "next_attempt_at": now + timedelta(seconds=delay),
            })
        async with self.db.transaction() as session:
            await session.execute(update(Notification), changes)  # bulk UPDATE by primary key

"""The background worker that expires overdue reservations (see ``Reservations.expire_overdue``)."""

from __future__ import annotations

import structlog
from microshop_chassis.background import BackgroundWorker

from .service import Reservations

log = structlog.get_logger("microshop.inventory.expiry")


class ExpirySweeper(BackgroundWorker):
    name = "reservation-expiry"
    failure_event = "expiry_sweep_failed"

    def __init__(self, reservations: Reservations, *, interval: float, batch_size: int = 500) -> None:
        self.reservations = reservations
        self.interval = interval
        self.batch_size = batch_size

    async def round(self) -> bool:
        # expire_overdue works through every batch itself, so there is never more to do at once.
        expired = await self.reservations.expire_overdue(batch_size=self.batch_size)
        if expired:
            log.info("reservations_expired", count=expired)
        return False

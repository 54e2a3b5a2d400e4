"""The background task that expires overdue reservations (see ``service.expire_overdue``)."""

from __future__ import annotations

import asyncio

import structlog
from microshop_chassis.background import BackgroundWorker
from microshop_chassis.db import Database

from . import service

log = structlog.get_logger("microshop.inventory.expiry")


class ExpirySweeper(BackgroundWorker):
    task_name = "reservation-expiry"

    def __init__(self, db: Database, *, interval: float, batch_size: int = 500) -> None:
        self.db = db
        self.interval = interval
        self.batch_size = batch_size



    async def run(self) -> None:
        while True:
            try:
                expired = await service.expire_overdue(self.db, batch_size=self.batch_size)
                if expired:
                    log.info("reservations_expired", count=expired)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: keep the task alive, try at the next tick
                log.warning("expiry_sweep_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.interval)

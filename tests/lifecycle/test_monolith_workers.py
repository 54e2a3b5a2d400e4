"""The monolith as several worker processes on one port (`microshop up --monolith --workers 2
--postgres`), on this machine's PostgreSQL: both workers serve, a worker killed mid-load is forked
again while the other keeps serving, and the books balance afterwards (`verify`): the saga's
leases, the outbox's deduplicated publishes and the shared durable consumers make two workers as
safe as one."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from microshop_chassis.testing import POSTGRES_ADMIN_URL, require_postgres, wait_until
from microshop_cli.experiment import Target, stock_up, verify
from microshop_cli.load import CheckoutLoad
from microshop_cli.postgres import drop_prefixed
from microshop_cli.system import System, SystemConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENV = {"MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.5", "MICROSHOP_LOG_LEVEL": "INFO"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory) -> AsyncIterator[System]:
    await asyncio.to_thread(require_postgres)
    prefix = f"w{uuid.uuid4().hex[:8]}"
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp("workers"), extra_env=ENV, monolith=True,
                                          workers=2, postgres=POSTGRES_ADMIN_URL, postgres_prefix=prefix)
    try:
        async with System(config) as running:
            await stock_up(Target.of(running), 1000)
            yield running
    finally:
        await drop_prefixed(prefix, POSTGRES_ADMIN_URL)


def workers_of(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.update(int(child) for child in (task / "children").read_text().split())
    return children


async def test_a_killed_worker_is_forked_again_and_the_books_balance(system):
    parent = system.pid("monolith")
    first = workers_of(parent)
    assert len(first) == 2, first
    checkouts = CheckoutLoad(Target.of(system).gateway_url, rate=8.0, seed=20261206, retries=0, sold_out=0.0,
                             cancel=0.0)
    await checkouts.prepare()
    stop = asyncio.Event()
    running = asyncio.create_task(checkouts.run(seconds=120, stop=stop))
    await asyncio.sleep(2)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    replaced = await wait_until(lambda: _two_new(parent, first), timeout=20, what="the worker forked again")
    await asyncio.sleep(3)  # the load goes on with the new worker
    stop.set()
    result = await running
    print(f"\nworkers {sorted(first)} -> {sorted(replaced)}; load: {result.summary()}")
    assert victim not in replaced and len(replaced) == 2
    assert system.pid("monolith") == parent and system.restarts("monolith") == 0  # the parent never went down
    confirmed = result.outcomes().get("CONFIRMED", 0)
    failed = [a for a in result.attempts if not (isinstance(a.status, int) and 200 <= a.status < 300)]
    # Only what the killed worker had in hand can fail (its connections reset); nothing else.
    assert confirmed > 20 and len(failed) <= 8, result.summary()
    checks, _ = await verify(Target.of(system), accepted_order_ids=result.accepted_order_ids, settle_seconds=60)
    violations = {f"{c.number}. {c.name}": c.problems or [c.figures] for c in checks if not c.ok}
    assert not violations, violations


async def _two_new(parent: int, before: set[int]) -> set[int] | None:
    now = workers_of(parent)
    return now if len(now) == 2 and now != before else None

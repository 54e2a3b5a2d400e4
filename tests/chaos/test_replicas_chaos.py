"""The chaos run on PostgreSQL with two replicas of every service that can have them (issue 9,
item 5): replicas are killed and paused and the broker restarted under a checkout load, and the
books still balance. The other chaos runs use SQLite and one process per service.

A system of its own, without chaos proxies (a proxy stands in front of one process; callers find
replicas by themselves), so the faults are the process faults: kill, pause, broker restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from microshop_cli.chaos import PROCESS_FAULTS
from microshop_cli.experiment import Target, run_experiment

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = 20261206
RATE = 8.0
SETTLE = 60.0
SCALED = ("users", "inventory", "orders", "payments", "notifications")
ENV = {"MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2", "MICROSHOP_LOG_LEVEL": "INFO"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(replicated_system) -> AsyncIterator[Target]:
    async with replicated_system("replicas-chaos", ENV) as system:
        yield Target.of(system)


async def test_process_chaos_on_postgresql_with_replicas(target):
    report = await run_experiment(target, duration=30, seed=SEED, rate=RATE, faults=PROCESS_FAULTS,
                                  settle_seconds=SETTLE)
    killed = {fault.target for fault in report.faults if fault.fault == "kill"}
    print(f"\nreplicas chaos run: {[f.describe() for f in report.faults]}\n{report.load.summary()}")
    # The monkey picks among a service's replicas, not only the first one (payments-2, ...).
    assert {name for name in killed if name.rpartition("-")[0] in SCALED}, killed
    assert {fault.fault for fault in report.faults} >= set(PROCESS_FAULTS)
    assert report.violations == 0, [c for c in report.checks if not c.ok]
    outcomes = report.load.outcomes()
    assert outcomes["CONFIRMED"] > 0, outcomes

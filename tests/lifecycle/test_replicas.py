"""Replicas, scaling, rolling deploys and failover of the whole system on PostgreSQL (issue 9,
items 2, 4 and 5): every change is made under a steady checkout load that does not retry on its
own, so any request the system fails shows up, and `verify` checks the books afterwards.

One system for the module: users, inventory, orders, payments and notifications run two replicas
each on the PostgreSQL server of this machine (databases and roles under a prefix of their own).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from microshop_chassis.testing import wait_until
from microshop_cli.bench import served_requests
from microshop_cli.experiment import Target, stock_up, verify
from microshop_cli.load import CheckoutLoad, LoadResult
from microshop_cli.system import DeployFailed, System

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = 20261206
RATE = 8.0  # checkouts per second: steady, well inside what the box serves
SETTLE = 60.0
SCALED = ("users", "inventory", "orders", "payments", "notifications")  # as tests/conftest.py runs them
ENV = {"MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.5", "MICROSHOP_LOG_LEVEL": "INFO"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(replicated_system) -> AsyncIterator[System]:
    async with replicated_system("replicas", ENV) as running:
        await stock_up(Target.of(running), 2000)
        yield running


def load(system: System, seed: int) -> CheckoutLoad:
    """No retries by the client and no sold-out or cancelled share: every failure is the system's."""
    return CheckoutLoad(Target.of(system).gateway_url, rate=RATE, seed=seed, retries=0, sold_out=0.0, cancel=0.0)


def failed(result: LoadResult) -> list:
    return [a for a in result.attempts if not (isinstance(a.status, int) and 200 <= a.status < 300)]


async def books_balance(system: System, result: LoadResult) -> None:
    checks, waited = await verify(Target.of(system), accepted_order_ids=result.accepted_order_ids,
                                  settle_seconds=SETTLE)
    violations = {f"{c.number}. {c.name}": c.problems or [c.figures] for c in checks if not c.ok}
    assert len(checks) == 6 and not violations, violations


async def served(system: System, name: str, route: str) -> int:
    """Requests to ``route`` the replica ``name`` served (its own /metrics)."""
    async with aiohttp.ClientSession() as http, http.get(system.url(name) + "/metrics") as reply:
        text = await reply.text()
    return int(served_requests(text, route))


async def test_every_replica_serves_and_the_gateway_reports_each(system):
    async with aiohttp.ClientSession() as http, http.get(system.url("gateway") + "/health") as reply:
        health = await reply.json()
    for service in SCALED:
        instances = sorted(r["instance"] for r in health["services"][service]["replicas"])
        assert instances == sorted(system.replicas(service)), health["services"][service]
    result = await load(system, SEED).run(checkouts=40)
    assert failed(result) == []
    counts = [await served(system, name, "/charges") for name in system.replicas("payments")]
    assert min(counts) >= 5, counts  # both replicas charged a fair share of 40


async def test_scaling_up_and_down_under_load_fails_no_request(system):
    checkouts = load(system, SEED + 1)
    await checkouts.prepare()
    stop = asyncio.Event()  # the load lasts until both changes are done, however long a start takes
    running = asyncio.create_task(checkouts.run(seconds=90, stop=stop))
    await asyncio.sleep(2)  # the load is under way (a fixed schedule: the change lands in it)
    up = await system.scale("payments", 3)
    assert len(up["replicas"]) == 3
    newest = up["added"][0]
    await wait_until(lambda: _served_some(system, newest), timeout=15, what=f"{newest} charging")
    down = await system.scale("payments", 1)
    assert down["replicas"] == [system.replicas("payments")[0]] and len(down["removed"]) == 2
    await asyncio.sleep(2)  # the load goes on past the scale-down: calls after it must not fail either
    stop.set()
    result = await running
    assert failed(result) == [], [(a.status, a.key) for a in failed(result)]
    await system.scale("payments", 2)
    await books_balance(system, result)


async def _served_some(system: System, name: str) -> bool:
    return await served(system, name, "/charges") > 0


async def test_a_rolling_deploy_of_three_services_under_load_fails_no_request(system):
    checkouts = load(system, SEED + 2)
    await checkouts.prepare()
    stop = asyncio.Event()  # the load lasts until the three rollouts are done, however long they take
    running = asyncio.create_task(checkouts.run(seconds=600, stop=stop))
    rollouts = []
    for service in ("orders", "payments", "inventory"):
        before = system.replicas(service)
        rollouts.append(await system.deploy(service, release="2.0"))
        assert not set(before) & set(system.replicas(service)), "every replica was replaced"
    assert not running.done(), f"the load ended before the rollouts: {rollouts}"
    stop.set()
    result = await running
    print(f"\nrollouts: {[(r['service'], r['seconds']) for r in rollouts]}; load: {result.summary()}")
    assert failed(result) == [], [(a.status, a.key) for a in failed(result)]
    assert result.outcomes()["CONFIRMED"] > 0
    async with aiohttp.ClientSession() as http, http.get(system.url("gateway") + "/health") as reply:
        health = await reply.json()
    for service in ("orders", "payments", "inventory"):
        assert health["services"][service]["version"] == "2.0", health["services"][service]
    await books_balance(system, result)


async def test_a_deploy_whose_replica_never_becomes_ready_rolls_back(system):
    before = system.replicas("payments")
    with pytest.raises(DeployFailed, match="rolled back"):
        # A setting the new replicas cannot read: they exit at start.
        await system.deploy("payments", release="broken",
                            env={"MICROSHOP_PAYMENTS_CARD_PROCESSOR_CONNECTIONS": "many"})
    after = system.replicas("payments")
    assert len(after) == len(before)
    assert all(system.component(name).release != "broken" for name in after)
    result = await load(system, SEED + 3).run(checkouts=16)
    assert failed(result) == []


async def test_killing_a_replica_of_each_service_under_load_keeps_checkouts_succeeding(system):
    checkouts = load(system, SEED + 4)
    await checkouts.prepare()
    running = asyncio.create_task(checkouts.run(seconds=17))
    killed = []
    for service in ("orders", "payments", "inventory", "users"):
        await asyncio.sleep(3)
        victim = system.replicas(service)[0]
        system.kill(victim)  # SIGKILL: no drain, no goodbye; the supervisor restarts it
        killed.append(victim)
    result = await running
    ok = len(result.attempts) - len(failed(result))
    print(f"\nkilled {killed}: {result.summary()}")
    assert ok / len(result.attempts) >= 0.99, result.summary()
    await books_balance(system, result)
    for name in killed:
        await system.wait_ready(name, timeout=30)

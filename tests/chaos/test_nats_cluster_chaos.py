"""The whole system on a three-node NATS cluster (``microshop up --nats-cluster``): the node that
leads the event stream is killed in the middle of a checkout load, and the books still balance -
no accepted order lost, every event delivered (issue 9, item 6; the broker-level proof is
libs/chassis/tests/test_nats_cluster.py).

A system of its own (the other chaos tests share one with a single NATS node), without chaos
proxies: the fault here is the broker node's death, not the network between services.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
import pytest_asyncio
from microshop_chassis.broker import server_urls
from microshop_chassis.events import STREAM
from microshop_chassis.testing import until_answered, wait_until
from microshop_cli.chaos import Chaos
from microshop_cli.experiment import Target, stock_up, verify
from microshop_cli.load import CheckoutLoad
from microshop_cli.nats_cluster import NODES
from microshop_cli.system import System, SystemConfig
from nats.js import JetStreamContext

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = 20261124  # the load's mix: a failure replays the same checkouts
AFTER_FAILOVER_SECONDS = 3.0
RATE = 8.0  # checkouts per second, as in test_chaos: the fault, not the load, decides
SETTLE = 60.0  # the chaos suite's stated time within which every order is terminal once faults stop
# Events stored since the load began before the leader dies: the kill lands in a flow under way.
EVENTS_BEFORE_KILL = 40

CLUSTER_ENV = {
    # Sagas are looked for often, so work interrupted by the failover resumes quickly.
    "MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2",
    "MICROSHOP_LOG_LEVEL": "INFO",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster_system(tmp_path_factory) -> AsyncIterator[System]:
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp("nats-cluster-chaos"), extra_env=CLUSTER_ENV,
                                          nats_cluster=True)
    async with System(config) as system:
        await stock_up(Target.of(system), 1000)
        yield system


async def test_a_nats_node_killed_under_load_loses_no_event(cluster_system):
    system, target = cluster_system, Target.of(cluster_system)
    nc = await nats.connect(server_urls(system.broker_url))  # the operator, on every node's URL
    try:
        js = nc.jetstream(timeout=2)
        info = await until_answered(lambda: js.stream_info(STREAM))
        assert info.config.num_replicas == len(NODES) and info.cluster.leader in NODES, info.cluster
        stored_before = info.state.messages

        load = CheckoutLoad(target.gateway_url, rate=RATE, seed=SEED)
        await load.prepare()
        stop = asyncio.Event()  # the load lasts until the failover is done, however long an election takes
        loading = asyncio.create_task(load.run(seconds=120, stop=stop))
        await wait_until(lambda: _stored(js, stored_before + EVENTS_BEFORE_KILL), timeout=30,
                         what=f"{EVENTS_BEFORE_KILL} events of the load stored")
        leader = (await until_answered(lambda: js.stream_info(STREAM))).cluster.leader
        restarts_before = system.restarts(leader)
        # SIGKILL: no clean step-down. Held down until a survivor leads: restarted at once, the
        # node could win the election back before the survivors' leader is ever seen.
        await Chaos(target.paths, target.state).kill(leader, down_for=60)
        try:
            successor = await wait_until(lambda: _leader_other_than(js, leader), timeout=30,
                                         what="a surviving node leading the stream")
        finally:
            system.release(leader)
        assert not loading.done(), "the load ended before the failover"
        await asyncio.sleep(AFTER_FAILOVER_SECONDS)  # the load goes on under the new leader (a schedule)
        stop.set()
        result = await loading
    finally:
        await nc.close()

    checks, waited = await verify(target, accepted_order_ids=result.accepted_order_ids, settle_seconds=SETTLE)
    print(f"\nkilled stream leader {leader}, {successor} took over: {result.summary()}; quiet after {waited:.1f} s")
    violations = {f"{c.number}. {c.name}": c.problems or [c.figures] for c in checks if not c.ok}
    assert len(checks) == 6 and not violations, violations
    assert result.outcomes()["CONFIRMED"] > 0, result.summary()
    # The supervisor brought the node back on its store; it rejoined the cluster.
    await system.wait_ready(leader, timeout=30)
    assert system.restarts(leader) == restarts_before + 1


async def _stored(js: JetStreamContext, at_least: int) -> bool:
    return (await js.stream_info(STREAM)).state.messages >= at_least


async def _leader_other_than(js: JetStreamContext, killed: str) -> str | None:
    """The stream's leader once a survivor leads it; None while the survivors elect one (the
    JetStream API may not answer meanwhile)."""
    try:
        leader = (await js.stream_info(STREAM)).cluster.leader
    except nats.errors.Error:
        return None
    return leader if leader not in (None, killed) else None


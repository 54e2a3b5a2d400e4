"""One whole system with a chaos proxy in front of every service, shared by the chaos tests of a
module: faults are injected into real processes and real connections, and every test ends with
`verify` reading the books of every service."""

from __future__ import annotations

import pytest_asyncio
from microshop_cli.experiment import Target, stock_up
from microshop_cli.system import System, SystemConfig

PROXY_SEED = 20261124  # the proxies' dice (error and reset rates); test_chaos.SEED drives the rest

CHAOS_ENV = {
    # Sagas are looked for often, so a killed orders' work resumes quickly after its restart.
    "MICROSHOP_ORDERS_RECOVERY_INTERVAL_SECONDS": "0.2",
    "MICROSHOP_LOG_LEVEL": "INFO",
    # Short, so a long enough fault makes sagas miss it and the compensations run for real.
    "MICROSHOP_ORDERS_SAGA_DEADLINE_SECONDS": "8",
    "MICROSHOP_ORDERS_PAYMENTS_TIMEOUT": "3",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(tmp_path_factory):
    config = SystemConfig.with_free_ports(tmp_path_factory.mktemp("chaos"), extra_env=CHAOS_ENV,
                                          chaos_proxies=True, chaos_seed=PROXY_SEED)
    async with System(config) as system:
        target = Target.of(system)
        await stock_up(target, 5000)
        target.system = system
        yield target

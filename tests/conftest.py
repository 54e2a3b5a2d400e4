"""Fixtures the whole-system test folders share."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import pytest
from microshop_chassis.testing import POSTGRES_ADMIN_URL, drop_prefixed, require_postgres
from microshop_cli.system import System, SystemConfig

# Every service that can have replicas (scaling.py), run twice.
SCALED = ("users", "inventory", "orders", "payments", "notifications")


@pytest.fixture(scope="module")
def replicated_system(tmp_path_factory):
    """``async with replicated_system(name, env) as system``: the whole system on this machine's
    PostgreSQL (databases and roles under a prefix of its own, dropped afterwards), two replicas of
    every service that can have them, on free ports. A missing server fails the run in CI."""
    require_postgres()

    @asynccontextmanager
    async def start(name: str, env: dict[str, str]):
        prefix = f"{name[0]}{uuid.uuid4().hex[:8]}"
        config = SystemConfig.with_free_ports(tmp_path_factory.mktemp(name), extra_env=env,
                                              postgres=POSTGRES_ADMIN_URL, postgres_prefix=prefix,
                                              replicas=dict.fromkeys(SCALED, 2))
        try:
            async with System(config) as system:
                yield system
        finally:
            await drop_prefixed(prefix)

    return start

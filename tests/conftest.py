"""Fixtures the whole-system test folders share."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from microshop_chassis.testing import POSTGRES_ADMIN_URL, missing_outside_ci, require_postgres
from microshop_cli.postgres import drop_prefixed
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
            await drop_prefixed(prefix, POSTGRES_ADMIN_URL)

    return start


# --- a real Chromium for the browser tests (tests/console, tests/storefront) --------------------

CHROMIUM = os.environ.get("MICROSHOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def require_chromium() -> None:
    """Like require_postgres: missing under CI is a failure, elsewhere a skip that says why."""
    missing = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed (requirements-dev.txt)"
    if missing is None and not shutil.which(CHROMIUM):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing is not None:
        missing_outside_ci(f"the browser tests need Chromium: {missing}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    """Debian's Chromium driven by Playwright (Playwright's own browser download does not work here)."""
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()

"""The scraper: every few seconds, the targets file again (Prometheus file_sd JSON, written by the
launcher whenever its processes change), then every target's ``/metrics`` at once, into the
history (scrape.py) the console's services page reads.

A target that answers 401 (the gateway, whose port is public) is asked again with a service token
from users, got with the shared service secret as any service gets its own
(microshop_chassis.settings and auth.ServiceTokenProvider, which caches it until a minute before
it expires); that target is sent the token from then on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import structlog
from microshop_chassis.auth import ServiceTokenProvider
from microshop_chassis.http_client import HttpSession
from microshop_chassis.settings import ServiceSettings

from .scrape import MetricsHistory, Scrape, Target, parse_metrics, read_targets

log = structlog.get_logger("microshop.telemetry.scraper")

# The name the console's token is issued to (users records it as the token's subject).
TOKEN_SUBJECT = "telemetry"
MAX_METRICS_BYTES = 4 * 1024 * 1024


class TokenSource:
    """A service token, made on first need from the settings every service reads (the secret and
    users' address from the environment; in local mode, the data directory's secret file)."""

    def __init__(self, make: Callable[[], ServiceTokenProvider] | None = None) -> None:
        self._make = make or _provider_from_settings
        self._provider: ServiceTokenProvider | None = None

    async def __call__(self) -> str:
        if self._provider is None:
            self._provider = self._make()
        return await self._provider()

    def invalidate(self) -> None:
        if self._provider is not None:
            self._provider.invalidate()

    async def close(self) -> None:
        if self._provider is not None:
            await self._provider.session.close()


def _provider_from_settings() -> ServiceTokenProvider:
    settings = ServiceSettings(service_name=TOKEN_SUBJECT)
    return ServiceTokenProvider(settings.users_url, TOKEN_SUBJECT, settings.service_secret, HttpSession(limit=4))


class Scraper:
    def __init__(self, targets_path: Path, history: MetricsHistory, *, interval: float = 5.0,
                 timeout: float = 2.0, tokens: TokenSource | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.targets_path = targets_path
        self.history = history
        self.interval = interval
        self.timeout = min(timeout, interval)
        self.tokens = tokens or TokenSource()
        self.clock = clock
        self._needs_token: set[str] = set()  # addresses that answered 401 without one
        self._session: aiohttp.ClientSession | None = None

    async def run_forever(self) -> None:
        try:
            while True:
                began = time.monotonic()
                try:
                    await self.scrape_round()
                except Exception:  # a bad round (an unreadable targets file...) must not end scraping
                    log.exception("scrape_round_failed")
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))
        finally:
            await self.close()

    async def scrape_round(self) -> None:
        try:
            targets = await asyncio.to_thread(read_targets, self.targets_path)
        except (OSError, ValueError) as exc:  # half-edited by hand, say: keep the last good list
            log.warning("scrape_targets_unreadable", path=str(self.targets_path), error=str(exc))
            targets = self.history.targets
        at = self.clock()
        scrapes = await asyncio.gather(*(self._scrape(target) for target in targets))
        self.history.add(at, targets, {target.instance: scrape for target, scrape in zip(targets, scrapes,
                                                                                          strict=True)})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.tokens.close()

    async def _scrape(self, target: Target) -> Scrape:
        at, began = self.clock(), time.monotonic()
        try:
            status, text = await self._get(target, with_token=target.address in self._needs_token)
            if status == 401:  # no token, or one users no longer accepts: a fresh one, once
                self._needs_token.add(target.address)
                self.tokens.invalidate()
                status, text = await self._get(target, with_token=True)
            if status != 200:
                return Scrape(at, time.monotonic() - began, error=f"HTTP {status}")
            snapshot = parse_metrics(text)
        except TimeoutError:
            return Scrape(at, time.monotonic() - began, error=f"no answer within {self.timeout:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Scrape(at, time.monotonic() - began, error=f"{type(exc).__name__}: {exc}"[:200])
        return Scrape(at, time.monotonic() - began, snapshot=snapshot)

    async def _get(self, target: Target, *, with_token: bool) -> tuple[int, str]:
        headers = {"authorization": f"Bearer {await self._token()}"} if with_token else {}
        if self._session is None:
            # No pooled connections: a replica restarts on its port, and a socket kept to the old
            # process would fail the next scrape for nothing. One connection per 5 s is cheap.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        async with self._session.get(target.metrics_url, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
            if response.status != 200:
                return response.status, ""
            body = await response.content.read(MAX_METRICS_BYTES + 1)
            if len(body) > MAX_METRICS_BYTES:
                raise ValueError(f"/metrics is over {MAX_METRICS_BYTES} bytes")
            return 200, body.decode("utf-8", errors="replace")

    async def _token(self) -> str:
        try:
            return await self.tokens()
        except Exception as exc:  # no secret configured, users down...: this target's scrape fails, saying why
            raise TokenUnavailable(f"no service token: {type(exc).__name__}: {exc}"[:200]) from exc


class TokenUnavailable(aiohttp.ClientError):
    """The scrape of a target that asks for a token could not get one (reported as its error)."""


"""A steady checkout load through the gateway, for chaos runs: what each customer saw.

Unlike `bench` (as fast as possible, happy path), this drives checkouts at a fixed rate with a mix
of outcomes (some declined cards, some sold-out products, some cancellations), and records every
attempt: the answer, its latency and, for every 2xx, the order id - so `verify` can check that each
order a customer was told about exists and reached its end.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from .catalog import DEMO_CATALOG, LOW_STOCK_SKU
from .shop_client import APPROVED_CARD, new_customer

DECLINED_CARD = {**APPROVED_CARD, "card_number": "4000000000000002"}
RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class Attempt:
    key: str
    status: int | str  # HTTP status, or the client error's name
    seconds: float  # the POST's latency (its last try, when retried)
    order_id: str | None = None
    order_status: str | None = None
    tries: int = 1


@dataclass
class LoadResult:
    attempts: list[Attempt] = field(default_factory=list)
    cancellations: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def accepted_order_ids(self) -> list[str]:
        return [a.order_id for a in self.attempts if a.order_id]

    def outcomes(self) -> Counter:
        return Counter(a.order_status or f"HTTP {a.status}" for a in self.attempts)

    def latency_percentile(self, p: float, *, successful_only: bool = False) -> float | None:
        values = [a.seconds for a in self.attempts if not successful_only or a.order_status == "CONFIRMED"]
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]

    def summary(self) -> dict:
        ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
        return {"checkouts": len(self.attempts), "seconds": round(self.seconds, 1),
                "outcomes": dict(self.outcomes()), "cancellations": dict(self.cancellations),
                "latency_ms": {"p50": ms(self.latency_percentile(50)), "p99": ms(self.latency_percentile(99))}}


class CheckoutLoad:
    """``rate`` checkouts per second, at most ``concurrency`` in flight, each from one of
    ``customers`` customers. ``declined``/``sold_out``/``cancel`` are shares of the mix; ``retries``
    is how often a customer tries again with the same Idempotency-Key after a 5xx or no answer."""

    def __init__(self, gateway: str, *, rate: float = 10.0, concurrency: int = 16, customers: int = 8,
                 declined: float = 0.1, sold_out: float = 0.05, cancel: float = 0.05, retries: int = 2,
                 seed: int = 0, timeout: float = 20.0) -> None:
        self.gateway = gateway.rstrip("/")
        self.rate = rate
        self.concurrency = concurrency
        self.customers = customers
        self.declined, self.sold_out, self.cancel = declined, sold_out, cancel
        self.retries = retries
        self.rng = random.Random(seed)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._tokens: list[str] = []

    async def prepare(self) -> None:
        """Register the customers (before faults start: registration is not what is measured)."""
        async with aiohttp.ClientSession(timeout=self.timeout) as http:
            self._tokens = list(await asyncio.gather(*(new_customer(http, self.gateway, "chaos")
                                                       for _ in range(self.customers))))

    async def run(self, *, checkouts: int | None = None, seconds: float | None = None,
                  stop: asyncio.Event | None = None) -> LoadResult:
        """Until ``checkouts`` were started, ``seconds`` passed or ``stop`` is set (whichever first)."""
        if not self._tokens:
            await self.prepare()
        result = LoadResult()
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task] = set()
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=self.concurrency * 2)
        async with aiohttp.ClientSession(timeout=self.timeout, connector=connector) as http:
            n = 0
            while True:
                if checkouts is not None and n >= checkouts:
                    break
                if seconds is not None and time.monotonic() - started >= seconds:
                    break
                if stop is not None and stop.is_set():
                    break
                await slots.acquire()
                plan = self._plan(n)
                task = asyncio.create_task(self._checkout(http, plan, result))
                task.add_done_callback(lambda t: (slots.release(), tasks.discard(t)))
                tasks.add(task)
                n += 1
                # A fixed schedule, not "as fast as answers come": faults must not slow the load down.
                await asyncio.sleep(max(0.0, started + n / self.rate - time.monotonic()))
            await asyncio.gather(*tasks)
        result.seconds = time.monotonic() - started
        return result

    def _plan(self, n: int) -> dict:
        roll = self.rng.random()
        sku = LOW_STOCK_SKU if roll < self.sold_out else self.rng.choice(
            [item.sku for item in DEMO_CATALOG if item.sku != LOW_STOCK_SKU])
        card = DECLINED_CARD if self.sold_out <= roll < self.sold_out + self.declined else APPROVED_CARD
        return {"token": self._tokens[n % len(self._tokens)], "sku": sku, "quantity": self.rng.randint(1, 2),
                "card": card, "cancel": self.rng.random() < self.cancel}

    async def _checkout(self, http: aiohttp.ClientSession, plan: dict, result: LoadResult) -> None:
        headers = {"Authorization": f"Bearer {plan['token']}", "Idempotency-Key": str(uuid.uuid4())}
        body = {"items": [{"sku": plan["sku"], "quantity": plan["quantity"]}], "payment": plan["card"]}
        attempt = Attempt(headers["Idempotency-Key"], "none", 0.0, tries=0)
        result.attempts.append(attempt)
        for tries in range(1, self.retries + 2):
            attempt.tries = tries
            began = time.monotonic()
            try:
                async with http.post(f"{self.gateway}/api/orders", json=body, headers=headers) as reply:
                    answer = await reply.json(content_type=None)
                    attempt.status = reply.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                attempt.status = type(exc).__name__
                answer = None
            attempt.seconds = time.monotonic() - began
            if isinstance(attempt.status, int) and 200 <= attempt.status < 300:
                attempt.order_id, attempt.order_status = answer["id"], answer["status"]
                break
            if isinstance(attempt.status, int) and attempt.status not in RETRYABLE:
                return
            await asyncio.sleep(0.5 * tries)
        if attempt.order_id and plan["cancel"] and attempt.order_status == "CONFIRMED":
            await self._cancel(http, plan["token"], attempt.order_id, result)

    async def _cancel(self, http: aiohttp.ClientSession, token: str, order_id: str, result: LoadResult) -> None:
        try:
            async with http.post(f"{self.gateway}/api/orders/{order_id}/cancel",
                                 headers={"Authorization": f"Bearer {token}"}) as reply:
                result.cancellations[f"HTTP {reply.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.cancellations[type(exc).__name__] += 1

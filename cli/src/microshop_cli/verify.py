"""`microshop verify`: read every service's state through its admin API (never its database) and
check the invariants that must hold across services, whatever faults happened.

1. stock is conserved per SKU; nothing stays reserved once quiet; available never negative
2. money: captured - refunded = total of CONFIRMED orders, in payments and at the card processor;
   at most one payment per order; no payment without an order; none left PENDING
3. every order terminal (within the settle time); every order a customer got a 2xx for exists
4. effects once: one e-mail per (order, event type) - and none missing
5. outbox backlogs drained, consumer lag 0, nothing dead-lettered
6. the event-built sales report equals the totals computed from orders and payments

It waits (up to ``settle`` seconds) for the system to go quiet - sagas finished, outboxes drained,
consumers caught up - and converge, then reports every invariant with its figures.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
from microshop_chassis.contracts import EventType
from microshop_chassis.services import SERVICES as SERVICE_LIST

from .components import SERVICES
from .shop_client import login

FINAL = {"CONFIRMED", "REJECTED", "CANCELLED"}
# Stopped for an operator: no saga moves it any more (so nothing to wait for), yet it is a real
# violation (e.g. units sold for a rejected order), reported by check_orders as "still NEEDS_ATTENTION".
STOPPED = {"NEEDS_ATTENTION"}
# Which e-mails each final order must have received, by the event that caused them.
EXPECTED_MAIL = {"CONFIRMED": {EventType.ORDER_CONFIRMED}, "REJECTED": {EventType.ORDER_REJECTED},
                 "CANCELLED": {EventType.ORDER_CONFIRMED, EventType.ORDER_CANCELLED}}
# The services whose /admin/messaging has something to report (a relay or consumers).
MESSAGING_SERVICES = tuple(spec.name for spec in SERVICE_LIST if spec.messaging)


@dataclass
class Check:
    number: int
    name: str
    ok: bool
    figures: str
    problems: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    orders: list[dict]
    payments: list[dict]
    ledger: dict
    stock: list[dict]
    processor_charges: list[dict]
    mail: list[dict]
    sales: dict
    messaging: dict[str, dict]  # service -> /admin/messaging body (or {"error": ...})

    def quiet(self) -> bool:
        """Nothing left in flight: what `verify` waits for before checking."""
        return (all(o["status"] in FINAL | STOPPED for o in self.orders)
                and sum(item["reserved"] for item in self.stock) == 0
                and all(_messaging_idle(body) for body in self.messaging.values())
                and self.sales.get("orders_confirmed") == sum(o["status"] == "CONFIRMED" for o in self.orders))


def _messaging_idle(body: dict) -> bool:
    if "error" in body:
        return False
    outbox = body.get("outbox") or {}
    # A consumer's figures are null while its durable is not on the broker yet: lag unknown, not idle.
    return outbox.get("backlog", 0) == 0 and all(
        c.get("num_pending") == 0 and c.get("num_ack_pending") == 0 for c in body.get("consumers", []))


class Reader:
    """Pages through the admin APIs, as the admin user, straight to each service (not the gateway,
    which may itself be a fault's target)."""

    def __init__(self, urls: dict[str, str], email: str, password: str) -> None:
        self.urls = urls
        self.email, self.password = email, password
        self._token: str | None = None

    async def snapshot(self) -> Snapshot:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            if self._token is None:
                users = self.urls.get(LOGIN, self.urls["users"])
                self._token = await login(http, users + "/login", self.email, self.password)
            orders, payments, stock, messaging = await asyncio.gather(
                self._all(http, "orders", "/orders"), self._all(http, "payments", "/payments"),
                self._all(http, "inventory", "/stock"), self._messaging(http))
            ledger = await self._get(http, "payments", "/ledger/summary")
            sales = await self._get(http, "reports", "/sales")
            charges = (await self._get(http, "card-processor", "/_admin/charges"))["items"]
            mail = await self._all(http, "mail-catcher", "/api/messages", auth=False)
        return Snapshot(orders, payments, ledger, stock, charges, mail, sales, messaging)

    async def _get(self, http: aiohttp.ClientSession, service: str, path: str, *, auth: bool = True,
                   params: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self._token}"} if auth else {}
        async with http.get(self.urls[service] + path, headers=headers, params=params) as reply:
            if reply.status != 200:
                raise RuntimeError(f"{service} {path}: HTTP {reply.status}: {(await reply.text())[:200]}")
            return await reply.json(content_type=None)

    async def _all(self, http: aiohttp.ClientSession, service: str, path: str, *, auth: bool = True) -> list[dict]:
        items: list[dict] = []
        while True:
            page = await self._get(http, service, path, auth=auth, params={"limit": "1000", "offset": str(len(items))})
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    async def _messaging(self, http: aiohttp.ClientSession) -> dict[str, dict]:
        async def one(service: str) -> dict:
            try:
                return await self._get(http, service, "/admin/messaging")
            except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
                return {"error": str(exc)}

        bodies = await asyncio.gather(*(one(service) for service in MESSAGING_SERVICES))
        return dict(zip(MESSAGING_SERVICES, bodies, strict=True))


async def settle(reader: Reader, timeout: float, accepted_order_ids: Iterable[str] = (), poll: float = 0.5
                 ) -> tuple[Snapshot, float]:
    """The first snapshot that is quiet and passes every check - or the last one when ``timeout``
    passes, whose violations are then real: the system did not converge in the stated time. (Waiting
    for the checks too covers moves no listing shows, e.g. a cancellation between restock and record.)"""
    accepted = list(accepted_order_ids)
    began = time.monotonic()
    while True:
        try:
            snapshot = await reader.snapshot()
        except (RuntimeError, aiohttp.ClientError, TimeoutError):
            if time.monotonic() - began > timeout:  # a service still down: report that, not a snapshot
                raise
            await asyncio.sleep(poll)
            continue
        converged = snapshot.quiet() and all(check.ok for check in check_all(snapshot, accepted))
        if converged or time.monotonic() - began > timeout:
            return snapshot, time.monotonic() - began
        await asyncio.sleep(poll)


def check_all(s: Snapshot, accepted_order_ids: Iterable[str] = ()) -> list[Check]:
    return [check_stock(s), check_money(s), check_orders(s, accepted_order_ids), check_effects(s),
            check_messaging(s), check_reports(s)]


def _units_by_sku(orders: Iterable[dict]) -> Counter:
    units: Counter = Counter()
    for order in orders:
        for line in order["items"]:
            units[line["sku"]] += line["quantity"]
    return units


def check_stock(s: Snapshot) -> Check:
    sold = _units_by_sku(o for o in s.orders if o["status"] == "CONFIRMED")
    problems = []
    for item in s.stock:
        sku = item["sku"]
        if item["received_units"] != item["on_hand"] + sold[sku]:
            problems.append(f"{sku}: received {item['received_units']} != on hand {item['on_hand']} "
                            f"+ units of CONFIRMED orders {sold[sku]}")
        if item["sold_units"] != sold[sku]:
            problems.append(f"{sku}: inventory counts {item['sold_units']} sold, orders {sold[sku]} CONFIRMED")
        if item["reserved"] != 0:
            problems.append(f"{sku}: {item['reserved']} units still reserved")
        if item["on_hand"] - item["reserved"] < 0:
            problems.append(f"{sku}: available is negative ({item['on_hand'] - item['reserved']})")
    unknown = set(sold) - {item["sku"] for item in s.stock}
    problems += [f"{sku}: sold by orders but unknown to inventory" for sku in sorted(unknown)]
    figures = (f"{len(s.stock)} SKUs: received {sum(i['received_units'] for i in s.stock)} = on hand "
               f"{sum(i['on_hand'] for i in s.stock)} + sold {sum(sold.values())}; "
               f"reserved {sum(i['reserved'] for i in s.stock)}")
    return Check(1, "stock conservation", not problems, figures, problems)


def check_money(s: Snapshot) -> Check:
    orders = {o["id"]: o for o in s.orders}
    confirmed_total = sum(o["total_cents"] for o in s.orders if o["status"] == "CONFIRMED")
    problems = []
    if s.ledger["net_cents"] != confirmed_total:
        problems.append(f"payments' net {s.ledger['net_cents']} != CONFIRMED orders' total {confirmed_total}")
    kept = [c for c in s.processor_charges if c["status"] == "succeeded" and not c["refunded"]]
    at_processor = sum(c["amount_cents"] for c in kept)
    if at_processor != confirmed_total:
        problems.append(f"card processor's net {at_processor} != CONFIRMED orders' total {confirmed_total}")
    per_order = Counter(p["order_id"] for p in s.payments)
    problems += [f"order {oid}: {n} payments" for oid, n in per_order.items() if n > 1]
    for payment in s.payments:
        order = orders.get(payment["order_id"])
        if order is None:
            if payment["status"] in ("CAPTURED", "REFUNDED", "PENDING"):
                problems.append(f"payment {payment['id']} ({payment['status']}) "
                                f"for unknown order {payment['order_id']}")
            continue
        if payment["status"] == "CAPTURED" and order["status"] != "CONFIRMED":
            problems.append(f"order {order['id']} is {order['status']} but its payment is CAPTURED")
        if payment["status"] == "PENDING":
            problems.append(f"order {order['id']}: payment still PENDING")
    payment_status = {p["order_id"]: p["status"] for p in s.payments}
    for order in s.orders:
        if order["status"] == "CONFIRMED" and payment_status.get(order["id"]) != "CAPTURED":
            problems.append(f"order {order['id']} is CONFIRMED but its payment is {payment_status.get(order['id'])}")
    captures = sum(1 for c in s.processor_charges if c["status"] == "succeeded")
    figures = (f"captured {s.ledger['captured_cents']} - refunded {s.ledger['refunded_cents']} = "
               f"{s.ledger['net_cents']}; CONFIRMED total {confirmed_total}; processor net {at_processor} "
               f"({captures} captures, {sum(c['refunded'] for c in s.processor_charges)} refunded)")
    return Check(2, "money", not problems, figures, problems[:20])


def check_orders(s: Snapshot, accepted_order_ids: Iterable[str]) -> Check:
    by_status = Counter(o["status"] for o in s.orders)
    known = {o["id"] for o in s.orders}
    accepted = set(accepted_order_ids)
    missing = sorted(accepted - known)
    problems = [f"{n} orders still {status}" for status, n in by_status.items() if status not in FINAL]
    problems += [f"order {oid} was accepted (2xx) but does not exist" for oid in missing[:20]]
    figures = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items())) or "no orders"
    figures += f"; {len(accepted)} accepted by the load, {len(missing)} missing"
    return Check(3, "orders terminal", not problems, figures, problems)


def check_effects(s: Snapshot) -> Check:
    message_ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    deliveries: Counter = Counter()
    for message in s.mail:
        headers = {k.lower(): v for k, v in message["headers"].items()}
        order_id, event = headers.get("x-order-id"), headers.get("x-microshop-event-type")
        if order_id and event:
            message_ids[(order_id, event)].add(message.get("message_id") or headers.get("message-id", ""))
            deliveries[(order_id, event)] += 1
    problems = [f"order {oid}: {len(ids)} different {event} e-mails" for (oid, event), ids in message_ids.items()
                if len(ids) > 1]
    missing = []
    for order in s.orders:
        for event in EXPECTED_MAIL.get(order["status"], ()):
            if (order["id"], event) not in message_ids:
                missing.append(f"order {order['id']}: no {event} e-mail")
    problems += missing[:20]
    resent = sum(n - 1 for n in deliveries.values() if n > 1)
    figures = (f"{len(message_ids)} (order, event) e-mails for {len(s.orders)} orders; {len(missing)} missing; "
               f"{resent} re-deliveries with the same Message-ID (a receiver drops them)")
    return Check(4, "effects once", not problems, figures, problems)


def check_messaging(s: Snapshot) -> Check:
    problems, parts = [], []
    for service, body in s.messaging.items():
        if "error" in body:
            problems.append(f"{service}: {body['error']}")
            continue
        backlog = (body.get("outbox") or {}).get("backlog", 0)
        consumers = body.get("consumers", [])
        unknown = [c["durable"] for c in consumers if c.get("num_pending") is None]
        lag = sum((c.get("num_pending") or 0) + (c.get("num_ack_pending") or 0) for c in consumers)
        dead = sum(body.get("dead_letters", {}).values())
        if unknown:
            problems.append(f"{service}: lag of {', '.join(unknown)} unknown (durable not on the broker)")
        parts.append(f"{service} {backlog}/{lag}/{dead}")
        if backlog:
            problems.append(f"{service}: {backlog} events still in the outbox")
        if lag:
            problems.append(f"{service}: consumers {lag} events behind")
        if dead:
            problems.append(f"{service}: {dead} events dead-lettered")
    figures = "outbox/lag/dead-lettered: " + ", ".join(parts)
    return Check(5, "outbox and consumers drained", not problems, figures, problems)


def check_reports(s: Snapshot) -> Check:
    confirmed = [o for o in s.orders if o["status"] == "CONFIRMED"]
    expected = {
        "orders_confirmed": len(confirmed),
        "revenue_cents": sum(o["total_cents"] for o in confirmed),
        "units_sold": sum(_units_by_sku(confirmed).values()),
        "orders_rejected": sum(o["status"] == "REJECTED" for o in s.orders),
        "orders_cancelled": sum(o["status"] == "CANCELLED" for o in s.orders),
        "payments_captured_cents": s.ledger["captured_cents"],
        "payments_refunded_cents": s.ledger["refunded_cents"],
    }
    problems = [f"{name}: report {s.sales.get(name)} != {value} from orders and payments"
                for name, value in expected.items() if s.sales.get(name) != value]
    figures = f"{expected['orders_confirmed']} confirmed, revenue {expected['revenue_cents']}, " \
              f"units {expected['units_sold']}"
    return Check(6, "reports converge", not problems, figures, problems)


# Where the admin logs in, when not at users' own address (the monolith: through its public API).
LOGIN = "login"


def service_urls(processes: dict) -> dict[str, str]:
    names = (*SERVICES, "card-processor", "mail-catcher")
    urls: dict[str, str] = {}
    for name, info in processes.items():  # a service's replicas answer alike: any one will do
        for module in info.get("modules", ()):  # the monolith: each service's admin reads on its port
            urls.setdefault(module, f"{info['url']}/_services/{module}")
        if info.get("modules"):  # and the admin's login through its public API
            urls[LOGIN] = f"{info['url']}/api/users"
        service = info.get("service") or name
        if service in names:
            urls.setdefault(service, info["url"])
    return urls

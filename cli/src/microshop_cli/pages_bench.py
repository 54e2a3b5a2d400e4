"""`microshop bench-pages`: what each storefront page costs, measured through the storefront itself.

As a browser does it: real HTTP, a cookie jar per person, the CSRF token read from each form. A
customer registers, logs out and in again, adds two products to the cart, places an order with the
approved card and waits until it is CONFIRMED, then puts the same two products in the cart again
(the order emptied it); the admin logs in in a session of its own; a visitor (no login) has a third.
Then each page in turn is fetched by ``concurrency`` clients for ``seconds``, GETs only, redirects
not followed: anything but a 200 is an error. Per page: the HTML's size, requests per second,
p50/p95/p99 and errors; and the sizes of the static assets the pages link.

The load generator runs on the same cores as the system, as in ``microshop bench``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from .bench import percentile, running_or_fresh

APPROVED_CARD = {"card_number": "4242 4242 4242 4242", "expiry": "12/35", "cvc": "123"}
CONFIRM_TIMEOUT = 60.0
STATUS = re.compile(r'id="status" data-status="([A-Z_]+)"')
PROBLEM = re.compile(r'<p class="notice error"[^>]*>([^<]*)</p>')


@dataclass
class PageResult:
    page: str  # as the docs name it: /orders/{id}
    path: str  # what was fetched
    who: str  # customer, admin or visitor
    html_bytes: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, the 200 answers only
    errors: Counter = field(default_factory=Counter)  # "HTTP 303", "ClientConnectorError", ...

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float | None:
        return percentile(self.latencies, p)

    def as_dict(self) -> dict:
        ms = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
        return {"page": self.page, "path": self.path, "who": self.who, "html_bytes": self.html_bytes,
                "requests": len(self.latencies), "requests_per_s": round(self.requests_per_s, 1),
                "latency_ms": {f"p{p}": ms(self.percentile(p)) for p in (50, 95, 99)},
                "errors": dict(self.errors)}


@dataclass
class PagesResult:
    concurrency: int
    seconds: float  # per page
    pages: list[PageResult] = field(default_factory=list)
    static_bytes: dict[str, int] = field(default_factory=dict)  # /static/... -> bytes
    ready_seconds: float | None = None

    def as_dict(self) -> dict:
        return {"concurrency": self.concurrency, "seconds_per_page": self.seconds,
                "pages": [page.as_dict() for page in self.pages],
                "static_assets": {"files": self.static_bytes, "total_bytes": sum(self.static_bytes.values())},
                "up_ready_seconds": self.ready_seconds}


class _Page(HTMLParser):
    """A page's forms (action, fields, whether its button is disabled) and the assets it links."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str], bool]] = []
        self.assets: list[str] = []
        self._in_form = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append((a.get("action") or "", {}, False))
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            self.forms[-1][1][a["name"]] = a.get("value") or ""
        elif tag == "button" and self._in_form and "disabled" in a:
            action, fields, _ = self.forms[-1]
            self.forms[-1] = (action, fields, True)
        elif tag == "link" and a.get("rel") == "stylesheet" and a.get("href"):
            self.assets.append(a["href"])
        elif tag == "script" and a.get("src"):
            self.assets.append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


class PageBench:
    def __init__(self, storefront: str, admin_email: str, admin_password: str) -> None:
        self.storefront = storefront.rstrip("/")
        self.admin_email = admin_email
        self.admin_password = admin_password

    async def run(self, concurrency: int, seconds: float) -> PagesResult:
        result = PagesResult(concurrency, seconds)
        async with self._browser(concurrency) as customer, self._browser(concurrency) as admin, \
                self._browser(concurrency) as visitor:
            skus, order_id = await self._customer_with_an_order(customer)
            await self._log_in(admin, self.admin_email, self.admin_password)
            result.static_bytes = await self._static_bytes(visitor)
            people = {"customer": customer, "admin": admin, "visitor": visitor}
            pages = (
                ("/", "/", "customer"), ("/products/{sku}", f"/products/{skus[0]}", "customer"),
                ("/cart", "/cart", "customer"), ("/checkout", "/checkout", "customer"),
                ("/orders", "/orders", "customer"), ("/orders/{id}", f"/orders/{order_id}", "customer"),
                ("/orders/{id}/status", f"/orders/{order_id}/status", "customer"),
                ("/notifications", "/notifications", "customer"),
                ("/login", "/login", "visitor"), ("/register", "/register", "visitor"),
                ("/admin/products", "/admin/products", "admin"), ("/admin/orders", "/admin/orders", "admin"),
                ("/admin/payments", "/admin/payments", "admin"), ("/admin/report", "/admin/report", "admin"),
            )
            for page, path, who in pages:
                result.pages.append(await self._drive(people[who], PageResult(page, path, who), concurrency, seconds))
        return result

    def _browser(self, concurrency: int) -> aiohttp.ClientSession:
        # unsafe: keep cookies from an IP address (127.0.0.1), as a browser does.
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                     connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=30))

    # --- a person's steps, through the forms --------------------------------------------------

    async def _get(self, http: aiohttp.ClientSession, path: str) -> str:
        async with http.get(f"{self.storefront}{path}") as reply:
            text = await reply.text()
            if reply.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {reply.status} {self._problem(text)}")
            return text

    async def _submit(self, http: aiohttp.ClientSession, page: str, action: str, values: dict[str, str],
                      choose: Callable[[dict[str, str]], bool] = lambda fields: True) -> tuple[str, str]:
        """Open ``page``, fill the first enabled form to ``action`` that ``choose`` accepts (its hidden
        fields, the CSRF token among them, as the page wrote them) and send it; follow the redirect
        as a browser does. The final page's path and HTML."""
        html = await self._get(http, page)
        form = next((fields for form_action, fields, disabled in _Page(html).forms
                     if form_action == action and not disabled and choose(fields)), None)
        if form is None:
            raise RuntimeError(f"no form to {action} on {page}")
        async with http.post(f"{self.storefront}{action}", data={**form, **values}) as reply:
            text = await reply.text()
            if reply.status != 200:
                raise RuntimeError(f"POST {action}: HTTP {reply.status} {self._problem(text)}")
            return reply.url.path, text

    @staticmethod
    def _problem(html: str) -> str:
        found = PROBLEM.search(html)
        return found.group(1) if found else ""

    async def _log_in(self, http: aiohttp.ClientSession, email: str, password: str) -> None:
        _, html = await self._submit(http, "/login", "/login", {"email": email, "password": password})
        if 'id="who"' not in html:
            raise RuntimeError(f"logging in as {email} failed: {self._problem(html)}")

    async def _add_to_cart(self, http: aiohttp.ClientSession, skus: list[str]) -> None:
        for sku in skus:
            await self._submit(http, "/", "/cart/add", {}, choose=lambda fields, sku=sku: fields.get("sku") == sku)

    async def _customer_with_an_order(self, http: aiohttp.ClientSession) -> tuple[list[str], str]:
        """Register, log out and in, two products in the cart, one order CONFIRMED, the two
        products in the cart again. The products' skus and the order's id."""
        # users refuses a password containing the name, so the password is not made of it.
        email, password = f"pages-{uuid.uuid4().hex[:12]}@example.com", f"pw-{uuid.uuid4().hex[:16]}"
        _, html = await self._submit(http, "/register", "/register",
                                     {"name": "Pages", "email": email, "password": password})
        if 'id="who"' not in html:
            raise RuntimeError(f"registering a customer failed: {self._problem(html)}")
        await self._submit(http, "/", "/logout", {})
        await self._log_in(http, email, password)

        catalog = _Page(await self._get(http, "/"))
        skus = [fields["sku"] for action, fields, disabled in catalog.forms
                if action == "/cart/add" and not disabled][:2]
        if len(skus) < 2:
            raise RuntimeError("fewer than two products in stock: start the system without --no-seed")
        await self._add_to_cart(http, skus)
        path, _ = await self._submit(http, "/checkout", "/checkout", APPROVED_CARD)
        if not path.startswith("/orders/"):
            raise RuntimeError(f"the checkout did not lead to an order page but to {path}")
        order_id = path.removeprefix("/orders/")
        status, waited = "", time.perf_counter()
        while time.perf_counter() - waited < CONFIRM_TIMEOUT:
            found = STATUS.search(await self._get(http, f"/orders/{order_id}/status"))
            status = found.group(1) if found else ""
            if status == "CONFIRMED":
                break
            if status not in ("", "PENDING"):
                raise RuntimeError(f"the order ended {status}, not CONFIRMED")
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"the order was not CONFIRMED within {CONFIRM_TIMEOUT:.0f} s (it is {status})")
        await self._add_to_cart(http, skus)
        return skus, order_id

    async def _static_bytes(self, http: aiohttp.ClientSession) -> dict[str, int]:
        sizes = {}
        for asset in _Page(await self._get(http, "/login")).assets:
            async with http.get(f"{self.storefront}{asset}") as reply:
                if reply.status != 200:
                    raise RuntimeError(f"GET {asset}: HTTP {reply.status}")
                sizes[urlsplit(asset).path] = len(await reply.read())
        return sizes

    # --- the load -------------------------------------------------------------------------------

    async def _drive(self, http: aiohttp.ClientSession, result: PageResult, concurrency: int,
                     seconds: float) -> PageResult:
        url = f"{self.storefront}{result.path}"

        async def fetch() -> float | None:
            began = time.perf_counter()
            try:
                async with http.get(url, allow_redirects=False) as reply:
                    body = await reply.read()
                    status = reply.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.05)  # not a busy loop against a port that refuses
                return None
            if status != 200:
                result.errors[f"HTTP {status}"] += 1
                return None
            result.html_bytes = len(body)
            return time.perf_counter() - began

        async def client(deadline: float) -> None:
            while time.perf_counter() < deadline:
                latency = await fetch()
                if latency is not None:
                    result.latencies.append(latency)

        await fetch()  # once first, not timed: the template's first rendering compiles it
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started
        return result


async def bench_pages(data_dir: Path, concurrency: int, seconds: float) -> PagesResult:
    async with running_or_fresh(data_dir) as target:
        if not target.storefront_url:
            raise RuntimeError("the running system has no storefront")
        try:
            result = await PageBench(target.storefront_url, target.admin_email, target.admin_password).run(
                concurrency, seconds)
        except (aiohttp.ClientError, TimeoutError) as exc:  # while the customer and the admin get ready
            raise RuntimeError(f"the storefront at {target.storefront_url} did not answer: {exc!r}") from exc
        result.ready_seconds = target.ready_seconds
        return result

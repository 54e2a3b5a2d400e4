"""The pages' machinery without a network: every POST route is CSRF-checked, errors are pages,
and the headers are there (the app is driven in process, the gateway faked)."""

from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from fastapi.routing import APIRoute

from microshop_storefront.admin import router as admin_router
from microshop_storefront.bootstrap import build
from microshop_storefront.pages import router as pages_router
from microshop_storefront.settings import StorefrontSettings
from microshop_storefront.shop import Shop, Unavailable
from microshop_storefront.web import Web, posted_form, safe_next


class FakeShop(Shop):
    def __init__(self, *, down: bool = False) -> None:
        super().__init__({})
        self.down = down

    async def products(self):
        if self.down:
            raise Unavailable("The catalog is unavailable right now. Please try again in a moment.")
        return [{"sku": "MUG-1", "name": "Mug <b>", "description": "", "price_cents": 1450, "currency": "USD",
                 "available": 3}]


@pytest.fixture
def app(tmp_path):
    host = build(StorefrontSettings(data_dir=tmp_path, secret="unit-test-secret"))
    web = host.app.provided[Web]
    web.shop = FakeShop()
    return host.app, web


class Answer:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code, self.text = status, body.decode()
        self.headers = {name.decode().lower(): value.decode() for name, value in headers}
        self.set_cookies = [value.decode() for name, value in headers if name.lower() == b"set-cookie"]


class client:  # noqa: N801 - used like an HTTP client's context manager
    """Drives the ASGI app in process (no server, no network), keeping its cookies like a browser."""

    def __init__(self, app, scheme: str = "http") -> None:
        self.app, self.scheme, self.cookies = app, scheme, {}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        return None

    async def get(self, path: str) -> Answer:
        return await self.request("GET", path)

    async def post(self, path: str, *, data: dict | None = None, json: dict | None = None) -> Answer:
        import json as json_module

        if json is not None:
            return await self.request("POST", path, json_module.dumps(json).encode(), "application/json")
        return await self.request("POST", path, urlencode(data or {}).encode(), "application/x-www-form-urlencoded")

    async def request(self, method: str, path: str, body: bytes = b"", content_type: str = "") -> Answer:
        headers = [(b"host", b"storefront.test")]
        if content_type:
            headers += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        if self.cookies:
            headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": self.scheme, "path": path.split("?")[0], "raw_path": path.split("?")[0].encode(),
                 "query_string": path.partition("?")[2].encode(), "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("storefront.test", 80)}
        sent = False
        answer: dict = {"body": b""}

        async def receive():
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                answer.update(status=message["status"], headers=message.get("headers", []))
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        try:
            await self.app(scope, receive, send)
        except Exception:
            if "status" not in answer:  # the error page was sent before the exception went on up
                raise
        result = Answer(answer["status"], answer["headers"], answer["body"])
        for line in result.set_cookies:
            for name, morsel in SimpleCookie(line).items():
                self.cookies[name] = morsel.value
        return result


def test_every_post_route_takes_its_form_through_the_csrf_check():
    posts = [route for router in (pages_router, admin_router) for route in router.routes
             if isinstance(route, APIRoute) and "POST" in route.methods]
    assert len(posts) >= 8
    for route in posts:
        calls = {dependency.call for dependency in route.dependant.dependencies}
        assert posted_form in calls, route.path


async def test_a_post_without_a_token_is_403_and_with_the_pages_token_it_goes_through(app):
    async with client(app[0]) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "Mug &lt;b&gt;" in page.text and "$14.50" in page.text
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        refused = await http.post("/cart/add", data={"sku": "MUG-1"})
        assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]
        json_body = await http.post("/cart/add", json={"sku": "MUG-1", "csrf_token": token})
        assert json_body.status_code == 403
        added = await http.post("/cart/add", data={"sku": "MUG-1", "quantity": "2", "csrf_token": token})
        assert added.status_code == 303 and "ms_cart" in client_cookies(http)
        cart = await http.get("/cart")
        assert "$29.00" in cart.text


async def test_pages_carry_the_security_headers_and_errors_are_pages(app):
    async with client(app[0]) as http:
        page = await http.get("/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "same-origin"
        cookie = page.set_cookies[0].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        missing = await http.get("/nowhere")
        assert missing.status_code == 404 and "Page not found" in missing.text
        assert (await http.get("/health")).headers["content-type"] == "application/json"


async def test_over_tls_the_cookies_are_secure(app):
    async with client(app[0], scheme="https") as http:
        assert "secure" in (await http.get("/")).set_cookies[0].lower()


async def test_a_down_catalog_is_a_page_that_says_so(app):
    app[1].shop = FakeShop(down=True)
    async with client(app[0]) as http:
        page = await http.get("/")
        assert page.status_code == 503 and "The catalog is unavailable right now" in page.text


async def test_an_unexpected_error_is_a_500_page_without_a_trace(app):
    class Broken(FakeShop):
        async def products(self):
            raise RuntimeError("secret internals")

    app[1].shop = Broken()
    async with client(app[0]) as http:
        page = await http.get("/")
        assert page.status_code == 500 and "Something went wrong" in page.text and "secret" not in page.text


async def test_pages_that_need_a_login_send_to_it_and_come_back(app):
    async with client(app[0]) as http:
        answer = await http.get("/checkout")
        assert answer.status_code == 303 and answer.headers["location"] == "/login?next=/checkout"


@pytest.mark.parametrize(("target", "safe"), [("/cart", "/cart"), ("https://evil.example/", "/"),
                                              ("//evil.example", "/"), ("/\\evil", "/"), (None, "/"), ("", "/")])
def test_only_a_local_path_is_followed_after_login(target, safe):
    assert safe_next(target) == safe


def client_cookies(http: client) -> dict[str, str]:
    return http.cookies

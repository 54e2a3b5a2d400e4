"""What every page shares: the templates, the two cookies, CSRF, redirects, error pages and the
security headers.

Each route reads the session with ``web.session(request)`` and answers through ``web.render`` or
``web.redirect``, which write the session cookie back when it changed. Every POST route takes its
form through the ``PostForm`` dependency, which refuses (403) a form whose CSRF token is not the
session's: no POST handler can forget it (tests/unit/test_routes.py checks they all declare it).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from microshop_chassis.errors import Problem, problem_response
from microshop_chassis.middleware import QUIET_PATHS
from microshop_chassis.provide import Provide

from . import __version__
from .cookies import CART_COOKIE, SESSION_COOKIE, CookieCodec, Session, csrf_token, csrf_valid, read_cart
from .money import format_money
from .settings import StorefrontSettings
from .shop import Shop

log = structlog.get_logger("microshop.storefront")

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 100
# No inline script or style anywhere: the pages load /static files only.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                           "object-src 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
# The chassis's own answers (probes, metrics, the OpenAPI document) stay problem+json, not pages.
_API_PATHS = QUIET_PATHS | {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
TERMINAL = frozenset({"CONFIRMED", "REJECTED", "CANCELLED", "NEEDS_ATTENTION"})


class CsrfRejected(Exception):
    pass


class Web:
    """The storefront's page machinery, provided to every route."""

    def __init__(self, settings: StorefrontSettings, key: bytes, shop: Shop) -> None:
        self.settings = settings
        self.key = key
        self.shop = shop
        self.sessions = CookieCodec(key, "session")
        self.carts = CookieCodec(key, "cart")
        self.templates = Environment(loader=PackageLoader("microshop_storefront", "templates"),
                                     autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.templates.globals.update(money=format_money, version=__version__,
                                      mail_catcher_url=settings.mail_catcher_url, terminal=TERMINAL,
                                      poll_ms=settings.order_poll_ms)

    # --- the cookies ----------------------------------------------------------------------------

    def session(self, request: Request) -> Session:
        cached = request.scope.get("storefront.session")
        if cached is None:
            data = self.sessions.loads(request.cookies.get(SESSION_COOKIE), self.settings.session_max_age_seconds)
            cached = request.scope["storefront.session"] = Session.from_cookie(data)
            if cached.token and not cached.logged_in:  # the token expired: forget it, say so once
                cached.log_out()
                cached.flash("info", "Your session has ended. Please log in again.")
        return cached

    def cart(self, request: Request) -> dict[str, int]:
        return read_cart(self.carts.loads(request.cookies.get(CART_COOKIE), self.settings.cart_max_age_seconds))

    def _secure(self, request: Request) -> bool:
        if self.settings.secure_cookies in ("always", "never"):
            return self.settings.secure_cookies == "always"
        return request.url.scheme == "https"

    def write_cookies(self, request: Request, response: Response, session: Session,
                      cart: Mapping[str, int] | None = None) -> None:
        secure = self._secure(request)
        if session.changed:
            response.set_cookie(SESSION_COOKIE, self.sessions.dumps(session.to_cookie()), httponly=True,
                                samesite="lax", secure=secure, path="/", max_age=self.settings.session_max_age_seconds)
        if cart is not None:
            if cart:
                response.set_cookie(CART_COOKIE, self.carts.dumps(dict(cart)), httponly=True, samesite="lax",
                                    secure=secure, path="/", max_age=self.settings.cart_max_age_seconds)
            else:
                response.delete_cookie(CART_COOKIE, path="/", httponly=True, samesite="lax", secure=secure)

    # --- answers --------------------------------------------------------------------------------

    def render(self, request: Request, template: str, *, status: int = 200, cart: Mapping[str, int] | None = None,
               fragment: bool = False, **context: Any) -> HTMLResponse:
        session = self.session(request)
        shown_cart = cart if cart is not None else self.cart(request)
        html = self.templates.get_template(template).render(
            request=request, session=session, csrf=csrf_token(self.key, session.sid),
            flashes=[] if fragment else session.take_flashes(), cart_count=sum(shown_cart.values()),
            path=request.url.path, **context)
        response = HTMLResponse(html, status_code=status)
        self.write_cookies(request, response, session, cart)
        return response

    def redirect(self, request: Request, url: str, *, cart: Mapping[str, int] | None = None) -> RedirectResponse:
        """303: the browser GETs ``url``, so a reload never re-sends the form."""
        response = RedirectResponse(url, status_code=303)
        self.write_cookies(request, response, self.session(request), cart)
        return response

    def to_login(self, request: Request, message: str | None = None) -> RedirectResponse:
        session = self.session(request)
        if message:
            session.flash("info", message)
        return self.redirect(request, f"/login?next={safe_next(request.url.path)}")

    def error_page(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        try:
            return self.render(request, "error.html", status=status, title=title, message=message)
        except Exception:  # the error page itself failed (a broken template): still no stack trace
            log.exception("error_page_failed")
            return HTMLResponse(f"<!doctype html><title>{status}</title><h1>{status}</h1><p>Something went wrong. "
                                "<a href=\"/\">Back to the shop</a></p>", status_code=status)


WebDep = Annotated[Web, Provide(Web)]


def safe_next(target: str | None) -> str:
    """A local path to go back to after logging in; anything else (another site) is the catalog."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


async def posted_form(request: Request, web: WebDep) -> dict[str, str]:
    """The POSTed form (urlencoded), once its CSRF token matched the session's; CsrfRejected (403) else."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != FORM_TYPE:
        raise CsrfRejected("not a form")
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:
        raise CsrfRejected("too many fields") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    if not csrf_valid(web.key, web.session(request).sid, form.get("csrf_token")):
        raise CsrfRejected("token missing or not this session's")
    return form


PostForm = Annotated[dict[str, str], Depends(posted_form)]


def new_checkout_key() -> str:
    """One per checkout attempt: made when the form is shown, sent as the Idempotency-Key."""
    return f"sf-{int(time.time())}-{secrets.token_urlsafe(12)}"


# --- errors and headers, for the whole app ------------------------------------------------------


def install_pages(app: FastAPI, web: Web) -> None:
    """HTML error pages instead of problem+json (but for the chassis's own endpoints), and the
    security headers on every answer."""

    def api_path(request: Request) -> bool:
        return request.url.path in _API_PATHS

    @app.exception_handler(CsrfRejected)
    async def _csrf(request: Request, exc: CsrfRejected) -> HTMLResponse:
        log.warning("csrf_rejected", path=request.url.path, reason=str(exc))
        return web.error_page(request, 403, "This form has expired",
                              "The page you sent was too old or not from this site. Go back, reload the page "
                              "and try again.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if api_path(request):
            return problem_response(Problem(exc.status_code, str(exc.detail)), request.url.path)
        if exc.status_code == 404:
            return web.error_page(request, 404, "Page not found", "There is nothing at this address.")
        if exc.status_code == 405:
            return web.error_page(request, 405, "Not here", "This page cannot be used like that.")
        return web.error_page(request, exc.status_code, "Something is not right",
                              "The request could not be completed.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        return web.error_page(request, 404, "Page not found", "There is nothing at this address.")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> HTMLResponse:
        log.exception("unhandled_error", path=request.url.path)
        return web.error_page(request, 500, "Something went wrong",
                              "An unexpected error occurred on our side; it has been logged. Please try again.")

    app.add_middleware(SecurityHeaders)


class SecurityHeaders:
    """Pure ASGI: adds the headers of ``SECURITY_HEADERS`` to every answer."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((name, value) for name, value in SECURITY_HEADERS if name not in names)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

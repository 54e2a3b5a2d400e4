"""storefront's composition root: the shop in a browser, a backend for frontend that owns no
business data (no database, no broker of its own) and calls only the gateway's public API."""

from __future__ import annotations

from importlib.resources import files

from starlette.staticfiles import StaticFiles

from microshop_chassis.host import ServiceHost

from . import __version__
from .admin import router as admin_router
from .cookies import cookie_key
from .pages import router as pages_router
from .settings import StorefrontSettings
from .shop import LABELS, Shop
from .web import Web, install_pages

DESCRIPTION = "The shop in a browser: server-rendered pages over the gateway's public API."
STATIC_MAX_AGE = 3600


def build(settings: StorefrontSettings | None = None) -> ServiceHost:
    settings = settings or StorefrontSettings()
    # It verifies no tokens itself (the services behind the gateway do), so no JWKS fetch from users.
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION, verifies_tokens=False)
    # One client per service behind the gateway, each with its own breaker: orders being down
    # fails the ordering pages fast and leaves the catalog's calls alone. The customer's token
    # goes with each call (authenticated=False: no service token of the storefront's own).
    clients = {service: host.client(f"gateway-{service}", settings.gateway_url, authenticated=False,
                                    timeout=settings.gateway_timeout)
               for service in LABELS}
    shop = Shop(clients, checkout_timeout=max(settings.gateway_timeout, 20.0))
    web = host.provide(Web, Web(settings, cookie_key(settings.secret, settings.resolved_keys_dir()), shop))
    host.app.mount("/static", CachedStatic(directory=str(files("microshop_storefront") / "static")), name="static")
    install_pages(host.app, web)
    host.routes(pages_router, admin_router)
    return host


class CachedStatic(StaticFiles):
    """The vendored stylesheet and script: cacheable for an hour (their URLs carry the version)."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE}"
        return response

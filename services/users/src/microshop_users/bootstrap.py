"""users' composition root: its parts, declared in start order and handed to the chassis host."""

from __future__ import annotations

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .security import Passwords, SigningKeys
from .service import Users
from .settings import UsersSettings

DESCRIPTION = "Accounts, roles and tokens. Publishes UserRegistered."


def build(settings: UsersSettings | None = None, *, verifier: JwtVerifier | None = None) -> ServiceHost:
    settings = settings or UsersSettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION)
    db = host.database("microshop_users:migrations")
    keys = SigningKeys(db)
    # users verifies its own tokens from its own table, not over HTTP to itself.
    host.provide(JwtVerifier, verifier or JwtVerifier(keys.jwks))
    users = Users(db, Passwords(), keys, token_ttl=settings.token_ttl_seconds,
                  service_token_ttl=settings.service_token_ttl_seconds, service_secret=settings.service_secret)
    host.on_start(keys.load, "signing-key")
    host.on_start(lambda: users.ensure_admin(email=settings.admin_email, password=settings.admin_password), "admin")
    host.outbox_relay(db, host.broker())
    host.provide(Users, users)
    host.routes(router, errors=ERRORS)
    return host

"""users' composition root: its parts, declared in start order and handed to the chassis host."""

from __future__ import annotations

from microshop_chassis.auth import JwtVerifier
from microshop_chassis.host import ServiceHost

from . import __version__
from .api import ERRORS, router
from .keys import SigningKeys
from .security import Passwords
from .service import Users
from .settings import UsersSettings
from .throttle import AccessLimits, ClientAddresses, Policy

DESCRIPTION = "Accounts, roles and tokens. Publishes UserRegistered."


def build(settings: UsersSettings | None = None, *, verifier: JwtVerifier | None = None) -> ServiceHost:
    settings = settings or UsersSettings()
    host = ServiceHost(settings, version=__version__, description=DESCRIPTION)
    db = host.database("microshop_users:migrations")
    keys = SigningKeys(settings.resolved_keys_dir(),
                       max_token_ttl=max(settings.token_ttl_seconds, settings.service_token_ttl_seconds),
                       publish_ahead=settings.signing_key_publish_ahead_seconds)
    # users verifies its own tokens with its own keys (files: no need to space out re-reads).
    host.provide(JwtVerifier, verifier or JwtVerifier(keys.jwks, min_refresh_interval=0))
    passwords = Passwords(slots=settings.hashing_slots, queue=settings.hashing_queue)
    users = Users(db, passwords, keys, token_ttl=settings.token_ttl_seconds,
                  service_token_ttl=settings.service_token_ttl_seconds, service_secret=settings.service_secret)
    host.provide(AccessLimits, AccessLimits(
        login_account=Policy("login-account", settings.login_failures_per_account, settings.login_window_seconds),
        login_address=Policy("login-address", settings.login_failures_per_address, settings.login_window_seconds),
        register_address=Policy("register-address", settings.registrations_per_address,
                                settings.registration_window_seconds),
    ))
    host.provide(ClientAddresses, ClientAddresses(settings.trusted_proxies))
    host.on_stop(passwords.close, "password-hashing")
    host.on_start(keys.load, "signing-keys")
    host.on_start(lambda: users.ensure_admin(email=settings.admin_email, password=settings.admin_password), "admin")
    host.outbox_relay(db, host.broker())
    host.provide(Users, users)
    host.routes(router, errors=ERRORS)
    return host

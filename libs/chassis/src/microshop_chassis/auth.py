"""Authentication every service does for itself: it verifies bearer tokens against the public
keys users publishes (JWKS), so no service trusts the gateway blindly.

Tokens are EdDSA (Ed25519) JWTs: small, and fast to verify. Three roles: ``customer``, ``admin``
and ``service`` (another microshop service, holding a token users issued it for its secret).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import aiohttp
import jwt
from fastapi import Depends, Request

from .discovery import Endpoints, as_endpoints
from .errors import AUTH_UNAVAILABLE, FORBIDDEN, UNAUTHORIZED, Problem
from .http_client import HttpSession
from .provide import Provided

ISSUER = "microshop-users"
AUDIENCE = "microshop"
ALGORITHM = "EdDSA"
ROLES = frozenset({"customer", "admin", "service"})
REQUIRED_CLAIMS = ("exp", "iat", "sub", "aud", "iss")

JwksLoader = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Principal:
    id: str
    role: str
    email: str | None = None
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_service(self) -> bool:
        return self.role == "service"


class JwtVerifier:
    def __init__(self, jwks_loader: JwksLoader, *, min_refresh_interval: float = 5.0, cache_size: int = 1024,
                 clock: Callable[[], float] = time.time) -> None:
        self._load = jwks_loader
        self._keys: dict[str, Any] = {}
        # Never refreshed: the first unknown kid loads the keys, however soon after boot.
        self._last_refresh = float("-inf")
        self._min_refresh_interval = min_refresh_interval
        self._lock = asyncio.Lock()
        # Tokens already verified: a service presents the same token on every call for an hour,
        # and an Ed25519 check costs ~0.25 ms. Keyed by the exact token string, so a token that
        # differs by one byte is verified afresh; an entry serves until the token's exp, only
        # while the key that signed it is still published, and the keys reloading empties it.
        self._verified: OrderedDict[str, tuple[Principal, float, str]] = OrderedDict()
        self._cache_size = cache_size
        self._clock = clock  # wall-clock seconds, as exp is

    async def _key_for(self, kid: str):
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:  # one refresh for many concurrent requests with a new kid
            if kid not in self._keys and time.monotonic() - self._last_refresh >= self._min_refresh_interval:
                jwks = await self._load()
                try:
                    self._keys = {k.key_id: k.key for k in jwt.PyJWKSet.from_dict(jwks).keys}
                except jwt.PyJWKSetError:  # no usable key published: every token is unknown-signed
                    self._keys = {}
                self._verified.clear()  # rotated or revoked: what was verified is verified again
                self._last_refresh = time.monotonic()
        return self._keys.get(kid)

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires_at, kid = cached
            if self._clock() < expires_at and kid in self._keys:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, expires_at, kid = await self._verify(token)
        self._verified[token] = (principal, expires_at, kid)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)  # the least recently used
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float, str]:
        """The principal, the token's expiry and the id of the key that signed it."""
        try:
            kid = jwt.get_unverified_header(token).get("kid", "")
        except jwt.PyJWTError as exc:
            raise _unauthorized("The bearer token is malformed.") from exc
        try:
            key = await self._key_for(kid)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AUTH_UNAVAILABLE("Cannot fetch signing keys from users.") from exc
        if key is None:
            raise _unauthorized("The token was signed by an unknown key.")
        try:
            # Every claim users always writes is required: a token without ``exp`` would be valid forever.
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": list(REQUIRED_CLAIMS)})
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("The token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise _unauthorized("The token is not valid.") from exc
        # The verifier's own clock has the last word, so a cached token and a fresh one expire alike.
        expires_at = int(claims["exp"])  # PyJWT has checked it is one
        if expires_at <= self._clock():
            raise _unauthorized("The token has expired.")
        subject, role = claims["sub"], claims.get("role")
        if not isinstance(subject, str) or not subject.strip():
            raise _unauthorized("The token names no subject.")
        if not isinstance(role, str) or role not in ROLES:
            raise _unauthorized("The token carries no known role.")
        email, name = claims.get("email"), claims.get("name")
        return Principal(
            id=subject, role=role,
            email=email if isinstance(email, str) else None, name=name if isinstance(name, str) else None,
        ), expires_at, kid


def http_jwks_loader(users: str | Endpoints, session: HttpSession, timeout: float = 3.0) -> JwksLoader:
    """``users``: its URL, or its replicas (a replica that cannot be reached is skipped next time)."""
    endpoints = as_endpoints(users)

    async def load() -> dict[str, Any]:
        async with _picked(endpoints) as base_url, session.get().get(
            f"{base_url}/.well-known/jwks.json", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            response.raise_for_status()
            return await response.json()

    return load


@asynccontextmanager
async def _picked(endpoints: Endpoints):
    """One replica for one call, marked unreachable when the call could not connect."""
    url = endpoints.pick()
    endpoints.started(url)
    reached = True
    try:
        yield url
    except aiohttp.ClientConnectionError:
        reached = False
        raise
    finally:
        endpoints.finished(url, reached=reached)


def _unauthorized(detail: str) -> Problem:
    return UNAUTHORIZED(detail)


_verifier = Provided(JwtVerifier)


async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("A bearer token is required.")
    # The verifier is looked up here, not declared as a dependency of its own: FastAPI spends
    # 10-20 µs a request on each dependency it resolves, and every authenticated request has this one.
    verifier = await _verifier(request)
    return await verifier.verify(token.strip())


async def _require_admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise FORBIDDEN("This needs the admin role.")
    return principal


async def _require_service(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not (principal.is_service or principal.is_admin):
        raise FORBIDDEN("This endpoint is for other microshop services.")
    return principal


async def require_operator(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not (principal.is_admin or principal.is_service):
        raise FORBIDDEN("This needs the admin role or a service token.")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(_require_admin)]
ServiceCaller = Annotated[Principal, Depends(_require_service)]
# Operations endpoints: an admin, or a service/operator tool holding a service token.
OperatorCaller = Annotated[Principal, Depends(require_operator)]


class ServiceTokenProvider:
    """Fetches and caches this service's own token from users (client-credentials style)."""

    def __init__(self, users: str | Endpoints, service: str, secret: str, session: HttpSession,
                 timeout: float = 3.0) -> None:
        self.users = as_endpoints(users)
        self.session = session
        self.service = service
        self.secret = secret
        self.timeout = timeout
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._token = None

    async def __call__(self) -> str:
        if self._token and time.monotonic() < self._expires_at:
            return self._token
        async with self._lock:
            if not self._token or time.monotonic() >= self._expires_at:
                async with _picked(self.users) as base_url, self.session.get().post(
                    f"{base_url}/service-tokens",
                    json={"service": self.service, "secret": self.secret},
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                ) as response:
                    if response.status != 200:
                        raise aiohttp.ClientResponseError(
                            response.request_info, (), status=response.status,
                            message="users refused a service token",
                        )
                    body = await response.json()
                self._token = body["access_token"]
                # Refresh a minute early so a token never expires in flight.
                self._expires_at = time.monotonic() + max(5.0, body["expires_in"] - 60)
        return self._token


async def _require_internal_caller(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    # Not an admin either: a refund or a restock by hand leaves the order it belongs to behind
    # (CONFIRMED with its money and stock gone); admins act through the owning service's API.
    if not principal.is_service:
        raise FORBIDDEN("This endpoint is for other microshop services only.")
    return principal


# Endpoints only other services call (orders' saga steps): a service token, nothing else.
InternalCaller = Annotated[Principal, Depends(_require_internal_caller)]

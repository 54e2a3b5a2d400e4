"""Rate limits on logins and registrations: a sliding-window log per key (an e-mail, a client
address), in memory, per service instance.

Written here rather than taken from the ``limits`` package because a login needs a *reservation*:
the attempt is counted before the password is hashed (so 300 parallel guesses cannot all slip
past the check while the first ones are still hashing) and handed back when it succeeds (so only
failures count against an account). ``limits`` counts hits but cannot return one.

Each replica holds its own counts: with N replicas an attacker gets N times the quota. Good enough
for bounding online guessing; a shared store (Redis, the database) is the step beyond.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """At most ``quota`` counted events per ``window`` seconds for one key."""

    name: str
    quota: int
    window: float


class Throttled(Exception):
    """A key is over its policy's quota; ``retry_after`` seconds until one slot frees."""

    def __init__(self, policy: Policy, retry_after: int) -> None:
        super().__init__(f"Too many attempts; try again in {retry_after} seconds.")
        self.policy = policy
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        # RateLimit fields of draft-ietf-httpapi-ratelimit-headers (-10/-11): the policy as quota
        # ``q`` per window ``w`` seconds, the remaining ``r`` and the seconds ``t`` until it resets.
        name = self.policy.name
        return {
            "Retry-After": str(self.retry_after),
            "RateLimit-Policy": f'"{name}";q={self.policy.quota};w={int(self.policy.window)}',
            "RateLimit": f'"{name}";r=0;t={self.retry_after}',
        }


@dataclass(eq=False)
class Slot:
    """One counted event, to hand back with ``SlidingWindow.release``."""

    key: str
    at: float


class SlidingWindow:
    """Counts events per key over the last ``policy.window`` seconds (a log of their times, at most
    ``quota`` per key, so memory is bounded by keys x quota; idle keys are swept)."""

    def __init__(self, policy: Policy, *, clock: Callable[[], float] = time.monotonic,
                 sweep_at_keys: int = 10_000) -> None:
        self.policy = policy
        self._clock = clock
        self._log: dict[str, deque[Slot]] = {}
        self._sweep_at_keys = sweep_at_keys

    def acquire(self, key: str) -> Slot:
        """Count one event for ``key``, or raise ``Throttled`` if the window is full."""
        now = self._clock()
        if len(self._log) >= self._sweep_at_keys:
            self._sweep(now)
        slots = self._log.setdefault(key, deque())
        self._expire(slots, now)
        if len(slots) >= self.policy.quota:
            raise Throttled(self.policy, max(1, math.ceil(slots[0].at + self.policy.window - now)))
        slot = Slot(key, now)
        slots.append(slot)
        return slot

    def release(self, slot: Slot) -> None:
        """Hand an event back: it no longer counts (a login that succeeded)."""
        slots = self._log.get(slot.key)
        if slots is not None and slot in slots:
            slots.remove(slot)

    def _expire(self, slots: deque[Slot], now: float) -> None:
        while slots and slots[0].at <= now - self.policy.window:
            slots.popleft()

    def _sweep(self, now: float) -> None:
        for key in list(self._log):
            self._expire(self._log[key], now)
            if not self._log[key]:
                del self._log[key]


class LoginAttempt:
    """The slots one login holds; handed back when it succeeds (or never got to check the
    password), so only failures count."""

    def __init__(self, held: list[tuple[SlidingWindow, Slot]]) -> None:
        self._held = held

    def release(self) -> None:
        for window, slot in self._held:
            window.release(slot)
        self._held = []


class AccessLimits:
    """users' limits: failed logins per account and per client address, registrations per client
    address. One instance per service instance (bootstrap makes it)."""

    def __init__(self, *, login_account: Policy, login_address: Policy, register_address: Policy,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.login_account = SlidingWindow(login_account, clock=clock)
        self.login_address = SlidingWindow(login_address, clock=clock)
        self.register_address = SlidingWindow(register_address, clock=clock)

    def login(self, *, email: str, address: str) -> LoginAttempt:
        """Count a login attempt for the (normalised) e-mail and the address before any hashing;
        raises ``Throttled`` (nothing counted) when either is over its quota."""
        account_slot = self.login_account.acquire(email)
        try:
            address_slot = self.login_address.acquire(address)
        except Throttled:
            self.login_account.release(account_slot)
            raise
        return LoginAttempt([(self.login_account, account_slot), (self.login_address, address_slot)])

    def register(self, *, address: str) -> None:
        self.register_address.acquire(address)


class ClientAddresses:
    """Tells the client address of a request (see ``client_address``), trusting the proxies given."""

    def __init__(self, trusted_proxies: list[str]) -> None:
        self.trusted = [ipaddress.ip_network(network, strict=False) for network in trusted_proxies]

    def of(self, request) -> str:
        """``request``: a Starlette request (anything with ``client`` and ``headers``)."""
        peer = request.client.host if request.client else None
        forwarded_for = ",".join(request.headers.getlist("x-forwarded-for"))
        return client_address(peer, forwarded_for, self.trusted)


def client_address(peer: str | None, forwarded_for: str | None,
                   trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The address a request came from: the peer's, unless the peer is a trusted proxy (the
    gateway) that appended the client's address to ``X-Forwarded-For``; then that last entry.
    Entries before the last were written by whoever sent the request, so they are never trusted."""
    peer = peer or "unknown"
    if not forwarded_for or not _within(peer, trusted_proxies):
        return peer
    last = forwarded_for.rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)

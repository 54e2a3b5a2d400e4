"""The browser's state, kept in two signed cookies (the storefront itself stores nothing):

- the session (``ms_session``): a random session id, the customer's access token and who they are,
  and one-shot messages for the next page. HttpOnly: no script can read the token.
- the cart (``ms_cart``): sku -> quantity, for anyone, logged in or not; survives a reload and a
  login.

Both are signed (itsdangerous, HMAC-SHA256 with the storefront's key, timestamped): a cookie that
was altered, signed with another key or is older than its max age reads as absent. Signed, not
encrypted: they hold nothing the customer may not see (their own token).

CSRF: every POST form carries ``csrf_token`` = HMAC(key, "csrf:" + session id). It is bound to the
session (a token from another session, or from before a login, which starts a new session, fails),
checked on the server, and never put where a script could read it besides the form itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from microshop_chassis.private_files import create_private_file, make_private_dir

SESSION_COOKIE = "ms_session"
CART_COOKIE = "ms_cart"
SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_CART_LINES = 20
MAX_QUANTITY = 99


class KeyFileError(RuntimeError):
    """The cookie key's file can be read by other accounts than the storefront's own."""


def cookie_key(secret: str, keys_dir: Path) -> bytes:
    """The configured secret, else the key file in ``keys_dir`` (created 0600 on first use; the
    directory 0700), so a restart keeps everyone's session and cart."""
    if secret:
        return secret.encode()
    path = make_private_dir(keys_dir) / "cookie-secret"
    create_private_file(path, secrets.token_urlsafe(48))  # False when another process made it first
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is readable by other accounts (mode {oct(mode & 0o777)}); chmod 600 it")
    return path.read_text().strip().encode()


class CookieCodec:
    """Signs and reads one kind of cookie value (a JSON-able object)."""

    def __init__(self, key: bytes, purpose: str) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt=f"microshop-storefront-{purpose}")

    def dumps(self, value: Any) -> str:
        return self._serializer.dumps(value)

    def loads(self, text: str | None, max_age: int) -> Any | None:
        if not text:
            return None
        try:
            return self._serializer.loads(text, max_age=max_age)
        except (BadSignature, ValueError, TypeError):  # tampered, expired, or not ours
            return None


def csrf_token(key: bytes, session_id: str) -> str:
    return hmac.new(key, b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def csrf_valid(key: bytes, session_id: str, given: str | None) -> bool:
    return bool(session_id and given) and hmac.compare_digest(csrf_token(key, session_id), given)


@dataclass
class Session:
    """What the session cookie holds. ``changed``: the response must set the cookie again."""

    sid: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    token: str | None = None
    expires_at: float = 0.0
    email: str = ""
    name: str = ""
    role: str = ""
    flashes: list[list[str]] = field(default_factory=list)  # [kind, message]
    changed: bool = True

    @classmethod
    def from_cookie(cls, data: Any) -> Session:
        if not isinstance(data, dict) or not isinstance(data.get("sid"), str):
            return cls()  # none, or unreadable: a new session (and a cookie for it)
        return cls(sid=data["sid"], token=data.get("tok"), expires_at=float(data.get("exp") or 0),
                   email=str(data.get("email") or ""), name=str(data.get("name") or ""),
                   role=str(data.get("role") or ""), flashes=list(data.get("flash") or []), changed=False)

    def to_cookie(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sid": self.sid}
        if self.token:
            data.update(tok=self.token, exp=self.expires_at, email=self.email, name=self.name, role=self.role)
        if self.flashes:
            data["flash"] = self.flashes
        return data

    @property
    def logged_in(self) -> bool:
        return bool(self.token) and self.expires_at > time.time()

    @property
    def is_admin(self) -> bool:
        return self.logged_in and self.role == "admin"

    def log_in(self, *, token: str, expires_in: int, email: str, name: str, role: str) -> None:
        """A new session id too: a session fixed before the login (and its CSRF token) is not this one."""
        self.sid = secrets.token_urlsafe(18)
        self.token, self.expires_at = token, time.time() + max(0, expires_in - 30)  # a margin for clocks
        self.email, self.name, self.role = email, name, role
        self.changed = True

    def log_out(self) -> None:
        self.sid = secrets.token_urlsafe(18)
        self.token, self.expires_at, self.email, self.name, self.role = None, 0.0, "", "", ""
        self.changed = True

    def flash(self, kind: str, message: str) -> None:
        """A message for the next page shown (``kind``: ok, error, info)."""
        self.flashes.append([kind, message])
        self.changed = True

    def take_flashes(self) -> list[list[str]]:
        taken, self.flashes = self.flashes, []
        if taken:
            self.changed = True
        return taken


def read_cart(data: Any) -> dict[str, int]:
    """A cart cookie's content, keeping only well-formed lines (sku -> 1..MAX_QUANTITY)."""
    if not isinstance(data, dict):
        return {}
    cart: dict[str, int] = {}
    for sku, quantity in list(data.items())[:MAX_CART_LINES]:
        if isinstance(sku, str) and SKU.match(sku) and type(quantity) is int and 0 < quantity <= MAX_QUANTITY:
            cart[sku] = quantity
    return cart


def add_to_cart(cart: dict[str, int], sku: str, quantity: int) -> dict[str, int]:
    """``quantity`` more of ``sku`` (capped at MAX_QUANTITY); ValueError for a bad sku or quantity,
    or a cart that has MAX_CART_LINES other products already."""
    _check(sku, quantity, allow_zero=False)
    if sku not in cart and len(cart) >= MAX_CART_LINES:
        raise ValueError(f"A cart holds at most {MAX_CART_LINES} different products.")
    return {**cart, sku: min(MAX_QUANTITY, cart.get(sku, 0) + quantity)}


def set_quantity(cart: dict[str, int], sku: str, quantity: int) -> dict[str, int]:
    """``sku``'s quantity set to ``quantity``; 0 removes it."""
    _check(sku, quantity, allow_zero=True)
    updated = dict(cart)
    if quantity == 0:
        updated.pop(sku, None)
    elif sku in cart:
        updated[sku] = quantity
    return updated


def _check(sku: str, quantity: int, *, allow_zero: bool) -> None:
    if not SKU.match(sku or ""):
        raise ValueError("No such product.")
    if not (0 if allow_zero else 1) <= quantity <= MAX_QUANTITY:
        raise ValueError(f"Choose a quantity from {0 if allow_zero else 1} to {MAX_QUANTITY}.")

"""Password hashing (argon2id) and token signing (EdDSA JWTs, published as a JWKS)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from microshop_chassis.auth import ALGORITHM, AUDIENCE, ISSUER
from microshop_chassis.db import Database
from sqlalchemy import select

from .models import SigningKey

# OWASP's argon2id minimum (m=19 MiB, t=2, p=1) rather than argon2-cffi's default 64 MiB: a
# hash must not double the process's memory, and a login must stay tens of milliseconds.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when the e-mail is unknown, so a wrong e-mail costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


# At most this many hashes at once: each takes 19 MiB and a core for tens of milliseconds, so a
# burst of logins queues here instead of multiplying the process's memory (and thrashing 2 cores).
_HASH_SLOTS = 2
_slots_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def _in_hash_slot(fn, *args):
    loop = asyncio.get_running_loop()  # a semaphore belongs to one loop (tests run several)
    slots = _slots_per_loop.setdefault(loop, asyncio.Semaphore(_HASH_SLOTS))
    async with slots:
        return await asyncio.to_thread(fn, *args)


async def hash_password(password: str) -> str:
    return await _in_hash_slot(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await _in_hash_slot(check)


@dataclass
class TokenIssuer:
    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    async def load_or_create(cls, db: Database) -> TokenIssuer:
        async with db.transaction() as session:
            row = (
                await session.execute(select(SigningKey).order_by(SigningKey.created_at.desc()).limit(1))
            ).scalar_one_or_none()
            if row is None:
                key = Ed25519PrivateKey.generate()
                pem = key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode()
                row = SigningKey(kid=uuid.uuid4().hex, private_pem=pem, created_at=datetime.now(UTC))
                session.add(row)
        # A replica that lost a creation race still loads the winner's key next start; within
        # this start both keys verify because the JWKS lists every key in the table.
        return cls(row.kid, serialization.load_pem_private_key(row.private_pem.encode(), password=None))

    def issue(self, *, subject: str, role: str, ttl: int, email: str | None = None, name: str | None = None) -> str:
        now = int(time.time())
        claims = {"sub": subject, "role": role, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl}
        if email:
            claims["email"] = email
        if name:
            claims["name"] = name
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})


async def jwks(db: Database) -> dict:
    async with db.session() as session:
        rows = (await session.execute(select(SigningKey))).scalars().all()
    keys = []
    for row in rows:
        public = serialization.load_pem_private_key(row.private_pem.encode(), password=None).public_key()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
        keys.append({**jwk, "kid": row.kid, "use": "sig", "alg": ALGORITHM})
    return {"keys": keys}

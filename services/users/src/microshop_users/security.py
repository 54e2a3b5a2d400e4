"""Password hashing (argon2id) and token signing (EdDSA JWTs, published as a JWKS)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from microshop_chassis.auth import ALGORITHM, AUDIENCE, ISSUER
from microshop_chassis.db import Database, utcnow
from sqlalchemy import select

from .models import SigningKey


class Passwords:
    """argon2id hashes, computed in worker threads, at most ``slots`` at once: each takes 19 MiB
    and a core for tens of milliseconds, so a burst of logins queues here instead of multiplying
    the process's memory (and thrashing 2 cores)."""

    def __init__(self, *, slots: int = 2) -> None:
        # OWASP's argon2id minimum (m=19 MiB, t=2, p=1) rather than argon2-cffi's default 64 MiB:
        # a hash must not double the process's memory, and a login must stay tens of milliseconds.
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
        # Verified when the e-mail is unknown, so a wrong e-mail costs as long as a wrong password.
        self._dummy_hash = self._hasher.hash("not-a-real-password")
        self._slots = asyncio.BoundedSemaphore(slots)

    async def hash(self, password: str) -> str:
        return await self._in_slot(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; never for ``None`` (no such account),
        which still costs one verification."""

        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy_hash, password) and password_hash is not None
            except (VerificationError, InvalidHashError):
                return False

        return await self._in_slot(check)

    async def _in_slot(self, fn, *args):
        async with self._slots:
            return await asyncio.to_thread(fn, *args)


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
                row = SigningKey(kid=uuid.uuid4().hex, private_pem=pem, created_at=utcnow())
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


class SigningKeys:
    """The keys in users' database: the one tokens are signed with, loaded (or created) at start
    once the schema is there, and every key's public half, published as the JWKS."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._issuer: TokenIssuer | None = None

    async def load(self) -> None:
        self._issuer = await TokenIssuer.load_or_create(self.db)

    @property
    def issuer(self) -> TokenIssuer:
        if self._issuer is None:
            raise RuntimeError("the signing key is not loaded yet (SigningKeys.load runs at start)")
        return self._issuer

    async def jwks(self) -> dict[str, Any]:
        async with self.db.session() as session:
            rows = (await session.execute(select(SigningKey))).scalars().all()
        keys = []
        for row in rows:
            public = serialization.load_pem_private_key(row.private_pem.encode(), password=None).public_key()
            jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(public))
            keys.append({**jwk, "kid": row.kid, "use": "sig", "alg": ALGORITHM})
        return {"keys": keys}

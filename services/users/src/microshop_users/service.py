"""users' use cases: accounts, logins and tokens. Hands out ``Account`` and ``IssuedToken``
(domain.py); refusals are the domain errors of domain.py."""

from __future__ import annotations

import asyncio
import hmac
import uuid
from typing import Any

from microshop_chassis.db import Database, utcnow
from microshop_chassis.outbox import add_event
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .domain import (
    Account,
    AccountNotFound,
    EmailTaken,
    InvalidCredentials,
    IssuedToken,
    Role,
    UnknownServiceCredentials,
    WeakPassword,
    normalize_email,
    password_weakness,
)
from .events import UserRegistered
from .keys import SigningKey, SigningKeys
from .models import User
from .security import Passwords


class Users:
    def __init__(self, db: Database, passwords: Passwords, keys: SigningKeys, *, token_ttl: int,
                 service_token_ttl: int, service_secret: str) -> None:
        self.db = db
        self.passwords = passwords
        self.keys = keys
        self.token_ttl = token_ttl
        self.service_token_ttl = service_token_ttl
        self._service_secret = service_secret.encode()

    async def register(self, *, email: str, password: str, name: str, role: Role = Role.CUSTOMER,
                       check_password: bool = True) -> Account:
        """A new account; ``EmailTaken`` if the e-mail has one already (after the same work: one
        hash either way, so the time taken does not tell), ``WeakPassword`` before any work."""
        email = normalize_email(email)
        if check_password:
            # zxcvbn is pure Python and takes milliseconds: off the event loop.
            weakness = await asyncio.to_thread(password_weakness, password, email=email, name=name)
            if weakness:
                raise WeakPassword(weakness)
        user = User(
            id=str(uuid.uuid4()), email=email, name=name.strip(), password_hash=await self.passwords.hash(password),
            role=role.value, created_at=utcnow(),
        )
        try:
            async with self.db.transaction() as session:
                session.add(user)
                await session.flush()  # the unique e-mail constraint decides, also between replicas
                event = UserRegistered(user_id=user.id, email=user.email, name=user.name, role=role)
                await add_event(session, event.to_event())
        except IntegrityError as exc:
            raise EmailTaken(email) from exc
        return _account(user)

    async def authenticate(self, *, email: str, password: str) -> Account:
        async with self.db.session() as session:
            found = await session.execute(select(User).where(User.email == normalize_email(email)))
            user = found.scalar_one_or_none()
        if not await self.passwords.verify(user.password_hash if user else None, password):
            raise InvalidCredentials()
        return _account(user)

    async def login(self, *, email: str, password: str) -> IssuedToken:
        account = await self.authenticate(email=email, password=password)
        token = self.keys.issuer.issue(subject=account.id, role=account.role, ttl=self.token_ttl,
                                       email=account.email, name=account.name)
        return IssuedToken(token, self.token_ttl)

    async def get(self, user_id: str) -> Account:
        async with self.db.session() as session:
            user = await session.get(User, user_id)
        if user is None:
            raise AccountNotFound()
        return _account(user)

    async def list(self, *, limit: int, offset: int) -> tuple[list[Account], int]:
        """Oldest first."""
        async with self.db.session() as session:
            total = (await session.execute(select(func.count()).select_from(User))).scalar_one()
            rows = (await session.execute(select(User).order_by(User.created_at).limit(limit).offset(offset))).scalars()
            return [_account(user) for user in rows], total

    async def ensure_admin(self, *, email: str, password: str) -> None:
        """Create the configured admin at first start; later starts leave it as it is."""
        async with self.db.session() as session:
            exists = (await session.execute(select(User.id).where(User.email == normalize_email(email)))).first()
        if exists:
            return
        try:
            # The operator chose this password (MICROSHOP_ADMIN_PASSWORD): not judged like a customer's.
            await self.register(email=email, password=password, name="Administrator", role=Role.ADMIN,
                                check_password=False)
        except EmailTaken:  # another replica created it at the same moment
            pass

    def issue_service_token(self, *, service: str, secret: str) -> IssuedToken:
        """A token with role ``service`` for another microshop service holding the shared secret."""
        if not hmac.compare_digest(secret.encode(), self._service_secret):
            raise UnknownServiceCredentials()
        token = self.keys.issuer.issue(subject=f"service:{service}", role="service", ttl=self.service_token_ttl)
        return IssuedToken(token, self.service_token_ttl)

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify every token users issued."""
        return await self.keys.jwks()

    async def rotate_signing_key(self) -> SigningKey:
        """A new signing key from now on; the old ones verify until their tokens have expired."""
        return await asyncio.to_thread(self.keys.rotate)


def _account(user: User) -> Account:
    return Account(id=user.id, email=user.email, name=user.name, role=Role(user.role))

"""users' use cases: plain async functions over the database; the HTTP layer only translates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from microshop_chassis.db import Database
from microshop_chassis.errors import Problem
from microshop_chassis.events import Event
from microshop_chassis.outbox import add_event
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .domain import Role, normalize_email
from .models import User
from .security import hash_password, verify_password


async def register(db: Database, *, email: str, password: str, name: str, role: Role = Role.CUSTOMER) -> User:
    email = normalize_email(email)
    user = User(
        id=str(uuid.uuid4()), email=email, name=name.strip(), password_hash=await hash_password(password),
        role=role.value, created_at=datetime.now(UTC),
    )
    try:
        async with db.transaction() as session:
            session.add(user)
            await session.flush()  # the unique e-mail constraint decides, also between replicas
            await add_event(
                session,
                Event(type="UserRegistered", source="users",
                      data={"user_id": user.id, "email": user.email, "name": user.name, "role": user.role}),
            )
    except IntegrityError as exc:
        raise Problem(409, f"An account with e-mail {email} already exists.", type="email-taken") from exc
    return user


async def authenticate(db: Database, *, email: str, password: str) -> User:
    async with db.session() as session:
        user = (await session.execute(select(User).where(User.email == normalize_email(email)))).scalar_one_or_none()
    if not await verify_password(user.password_hash if user else None, password):
        raise Problem(401, "E-mail or password is wrong.", type="invalid-credentials",
                      headers={"WWW-Authenticate": "Bearer"})
    return user


async def get_user(db: Database, user_id: str) -> User | None:
    async with db.session() as session:
        return await session.get(User, user_id)


async def list_users(db: Database, *, limit: int, offset: int) -> tuple[list[User], int]:
    async with db.session() as session:
        total = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        rows = (await session.execute(select(User).order_by(User.created_at).limit(limit).offset(offset))).scalars()
        return list(rows), total


async def ensure_admin(db: Database, *, email: str, password: str) -> None:
    """Create the configured admin at first start; later starts leave it as it is."""
    async with db.session() as session:
        exists = (await session.execute(select(User.id).where(User.email == normalize_email(email)))).first()
    if exists:
        return
    try:
        await register(db, email=email, password=password, name="Administrator", role=Role.ADMIN)
    except Problem:  # another replica created it at the same moment
        pass

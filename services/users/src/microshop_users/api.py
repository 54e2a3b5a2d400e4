"""users' HTTP API."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, status
from microshop_chassis.auth import AdminUser, CurrentUser
from microshop_chassis.errors import Problem
from microshop_chassis.pagination import Page, Paging

from . import service
from .schemas import Credentials, ServiceCredentials, Token, UserCreate, UserPublic, UserWithRole
from .security import jwks

router = APIRouter(tags=["users"])


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserPublic,
             responses={409: {"description": "E-mail already registered"}})
async def register(body: UserCreate, request: Request) -> UserPublic:
    user = await service.register(request.app.state.db, email=body.email, password=body.password, name=body.name)
    return UserPublic(id=user.id, email=user.email, name=user.name)


@router.post("/login", response_model=Token, responses={401: {"description": "Wrong e-mail or password"}})
async def login(body: Credentials, request: Request) -> Token:
    state = request.app.state
    user = await service.authenticate(state.db, email=body.email, password=body.password)
    ttl = state.settings.token_ttl_seconds
    token = state.issuer.issue(subject=user.id, role=user.role, ttl=ttl, email=user.email, name=user.name)
    return Token(access_token=token, expires_in=ttl)


@router.get("/me", response_model=UserWithRole)
async def me(principal: CurrentUser, request: Request) -> UserWithRole:
    user = await service.get_user(request.app.state.db, principal.id)
    if user is None:
        raise Problem(404, "This account no longer exists.", type="not-found")
    return UserWithRole(id=user.id, email=user.email, name=user.name, role=user.role)


@router.get("/users", response_model=Page[UserWithRole], summary="All accounts (admin)")
async def list_users(_: AdminUser, paging: Paging, request: Request) -> Page[UserWithRole]:
    users, total = await service.list_users(request.app.state.db, limit=paging.limit, offset=paging.offset)
    return Page(items=[UserWithRole(id=u.id, email=u.email, name=u.name, role=u.role) for u in users], total=total)


@router.get("/.well-known/jwks.json", summary="Public keys that verify microshop tokens")
async def jwks_document(request: Request) -> dict:
    return await jwks(request.app.state.db)


@router.post("/service-tokens", response_model=Token, summary="A token for another microshop service")
async def service_token(body: ServiceCredentials, request: Request) -> Token:
    state = request.app.state
    if not hmac.compare_digest(body.secret.encode(), state.settings.service_secret.encode()):
        raise Problem(401, "Unknown service credentials.", type="invalid-credentials")
    ttl = state.settings.service_token_ttl_seconds
    token = state.issuer.issue(subject=f"service:{body.service}", role="service", ttl=ttl)
    return Token(access_token=token, expires_in=ttl)

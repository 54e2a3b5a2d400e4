"""users' HTTP API: routes translate HTTP to the use cases of service.py and back; the domain's
errors become problem+json here, once (``ERRORS``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, status
from microshop_chassis.auth import AdminUser, CurrentUser
from microshop_chassis.errors import VALIDATION_ERROR, ProblemMap, ProblemType, problem_responses
from microshop_chassis.pagination import Page, Paging
from microshop_chassis.provide import Provide

from .domain import Account, AccountNotFound, EmailTaken, InvalidCredentials, IssuedToken, UnknownServiceCredentials
from .schemas import Credentials, ServiceCredentials, Token, UserCreate, UserPublic, UserWithRole
from .service import Users

EMAIL_TAKEN = ProblemType("email-taken", 409, "E-mail already registered")
# A wrong login and a wrong service secret alike: the caller learns nothing about which part was wrong.
INVALID_CREDENTIALS = ProblemType("invalid-credentials", 401, "Invalid credentials")
ACCOUNT_NOT_FOUND = ProblemType("not-found", 404, "Account not found")

ERRORS: ProblemMap = {
    EmailTaken: EMAIL_TAKEN,
    # A login failed: the client is told to come back with a bearer token.
    InvalidCredentials: replace(INVALID_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"}),
    UnknownServiceCredentials: INVALID_CREDENTIALS,
    AccountNotFound: ACCOUNT_NOT_FOUND,
}

router = APIRouter(tags=["users"])
UsersDep = Annotated[Users, Provide(Users)]


def with_role(account: Account) -> UserWithRole:
    return UserWithRole(id=account.id, email=account.email, name=account.name, role=account.role)


def token_out(issued: IssuedToken) -> Token:
    return Token(access_token=issued.access_token, expires_in=issued.expires_in)


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserPublic,
             responses=problem_responses((EMAIL_TAKEN, "an account with this e-mail exists already"),
                                         (VALIDATION_ERROR, "the body is not valid (e.g. a short password)")))
async def register(body: UserCreate, users: UsersDep) -> UserPublic:
    account = await users.register(email=body.email, password=body.password, name=body.name)
    return UserPublic(id=account.id, email=account.email, name=account.name)


@router.post("/login", response_model=Token,
             responses=problem_responses((INVALID_CREDENTIALS, "wrong e-mail or password (never which)")))
async def login(body: Credentials, users: UsersDep) -> Token:
    return token_out(await users.login(email=body.email, password=body.password))


@router.get("/me", response_model=UserWithRole,
            responses=problem_responses((ACCOUNT_NOT_FOUND, "the token's account no longer exists")))
async def me(principal: CurrentUser, users: UsersDep) -> UserWithRole:
    return with_role(await users.get(principal.id))


@router.get("/users", response_model=Page[UserWithRole], summary="All accounts (admin)")
async def list_users(_: AdminUser, paging: Paging, users: UsersDep) -> Page[UserWithRole]:
    accounts, total = await users.list(limit=paging.limit, offset=paging.offset)
    return Page(items=[with_role(account) for account in accounts], total=total)


@router.get("/.well-known/jwks.json", summary="Public keys that verify microshop tokens")
async def jwks_document(users: UsersDep) -> dict[str, Any]:
    return await users.jwks()


@router.post("/service-tokens", response_model=Token, summary="A token for another microshop service",
             responses=problem_responses((INVALID_CREDENTIALS, "the service secret is wrong")))
async def service_token(body: ServiceCredentials, users: UsersDep) -> Token:
    return token_out(users.issue_service_token(service=body.service, secret=body.secret))

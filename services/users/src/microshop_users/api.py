"""users' HTTP API: routes translate HTTP to the use cases of service.py and back; the domain's
errors become problem+json here, once (``ERRORS``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Request, status
from microshop_chassis.auth import AdminUser, CurrentUser
from microshop_chassis.errors import OVERLOADED, VALIDATION_ERROR, Problem, ProblemMap, ProblemType, problem_responses
from microshop_chassis.pagination import Page, Paging
from microshop_chassis.provide import Provide

from .domain import (
    Account,
    AccountNotFound,
    EmailTaken,
    HashingBusy,
    InvalidCredentials,
    IssuedToken,
    UnknownServiceCredentials,
    WeakPassword,
    normalize_email,
)
from .schemas import (
    Credentials,
    Registration,
    RotatedKey,
    ServiceCredentials,
    Token,
    UserCreate,
    UserWithRole,
)
from .service import Users
from .throttle import AccessLimits, ClientAddresses, Throttled

# A wrong login and a wrong service secret alike: the caller learns nothing about which part was wrong.
INVALID_CREDENTIALS = ProblemType("invalid-credentials", 401, "Invalid credentials")
ACCOUNT_NOT_FOUND = ProblemType("not-found", 404, "Account not found")
WEAK_PASSWORD = ProblemType("weak-password", 422, "Password not accepted")
RATE_LIMITED = ProblemType("rate-limited", 429, "Too many requests")

ERRORS: ProblemMap = {
    # A login failed: the client is told to come back with a bearer token.
    InvalidCredentials: replace(INVALID_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"}),
    UnknownServiceCredentials: INVALID_CREDENTIALS,
    AccountNotFound: ACCOUNT_NOT_FOUND,
    WeakPassword: WEAK_PASSWORD,
    HashingBusy: OVERLOADED,
}

router = APIRouter(tags=["users"])
UsersDep = Annotated[Users, Provide(Users)]
LimitsDep = Annotated[AccessLimits, Provide(AccessLimits)]
AddressesDep = Annotated[ClientAddresses, Provide(ClientAddresses)]


def with_role(account: Account) -> UserWithRole:
    return UserWithRole(id=account.id, email=account.email, name=account.name, role=account.role)


def token_out(issued: IssuedToken) -> Token:
    return Token(access_token=issued.access_token, expires_in=issued.expires_in)


def too_many(throttled: Throttled) -> Problem:
    return RATE_LIMITED(str(throttled), headers=throttled.headers())


@router.post("/register", status_code=status.HTTP_202_ACCEPTED, response_model=Registration,
             responses=problem_responses(
                 (VALIDATION_ERROR, "the body is not valid (e.g. a short password)"),
                 (WEAK_PASSWORD, "a common or simple password, or one made of the e-mail or name"),
                 (RATE_LIMITED, "too many registrations from this address"),
                 (OVERLOADED, "too many password hashes waiting"),
             ))
async def register(body: UserCreate, request: Request, users: UsersDep, limits: LimitsDep,
                   addresses: AddressesDep) -> Registration:
    """The same answer for a new e-mail (the account is created) and for one that has an account
    (nothing changes), after the same work: a stranger cannot learn who has an account here."""
    try:
        limits.register(address=addresses.of(request))
    except Throttled as throttled:
        raise too_many(throttled) from None
    try:
        await users.register(email=body.email, password=body.password, name=body.name)
    except EmailTaken:
        pass
    return Registration(email=normalize_email(body.email))


@router.post("/login", response_model=Token,
             responses=problem_responses(
                 (INVALID_CREDENTIALS, "wrong e-mail or password (never which)"),
                 (RATE_LIMITED, "too many failed logins for this account or from this address"),
                 (OVERLOADED, "too many password hashes waiting"),
             ))
async def login(body: Credentials, request: Request, users: UsersDep, limits: LimitsDep,
                addresses: AddressesDep) -> Token:
    try:
        attempt = limits.login(email=normalize_email(body.email), address=addresses.of(request))
    except Throttled as throttled:
        raise too_many(throttled) from None
    try:
        issued = await users.login(email=body.email, password=body.password)
    except HashingBusy:
        attempt.release()  # no password was checked: not a failed guess
        raise
    attempt.release()  # only failures count against the account and the address
    return token_out(issued)


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


@router.post("/admin/signing-keys/rotate", response_model=RotatedKey, status_code=status.HTTP_201_CREATED,
             summary="A new token signing key (admin); older keys verify until their tokens expire")
async def rotate_signing_key(_: AdminUser, users: UsersDep) -> RotatedKey:
    created = await users.rotate_signing_key()
    published = [key["kid"] for key in (await users.jwks())["keys"]]
    return RotatedKey(kid=created.kid, published=published)


@router.post("/service-tokens", response_model=Token, summary="A token for another microshop service",
             responses=problem_responses((INVALID_CREDENTIALS, "the service secret is wrong")))
async def service_token(body: ServiceCredentials, users: UsersDep) -> Token:
    return token_out(users.issue_service_token(service=body.service, secret=body.secret))

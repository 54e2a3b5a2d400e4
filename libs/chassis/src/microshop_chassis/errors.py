"""RFC 9457 problem details: every error a service returns has this shape.

``type`` is a URI naming the kind of problem (``https://microshop.dev/problems/out-of-stock``),
``title`` a short summary of that kind, ``status`` the HTTP status, ``detail`` what happened this
time. Extra members (``errors``, ``sku``...) carry machine-readable specifics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from .telemetry import PROBLEM_TYPE_ATTRIBUTE

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://microshop.dev/problems/"

log = structlog.get_logger("microshop.errors")


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str | None = None,  # noqa: A002 - the RFC's own member name
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = PROBLEM_BASE + type if type and "://" not in type else (type or "about:blank")
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


@dataclass(frozen=True)
class ProblemType:
    """One kind of problem, declared once and raised through its declaration: the last part of its
    type URI, its HTTP status and title, and headers it always carries (``Retry-After``).

    The types another service acts on are declared in ``contracts/problems.json`` (their Python
    names are in ``contracts.py``); a service's own in its ``api.py``.
    """

    slug: str
    status: int
    title: str | None = None
    headers: Mapping[str, str] | None = None

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def __call__(self, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any) -> Problem:
        merged = {**(self.headers or {}), **(headers or {})} or None
        return Problem(self.status, detail, type=self.uri, title=self.title, headers=merged, **extra)

    def __hash__(self) -> int:
        return hash(self.slug)

    def matches(self, status: int, body: Any) -> bool:
        """Whether an answer (status and problem+json body) is a problem of this type."""
        return status == self.status and isinstance(body, dict) and body.get("type") == self.uri


# Domain exception class -> the problem it is answered with. The exception's message is the
# detail and its public attributes are the problem's extension members, or only those it names in
# ``problem_members`` (the RFC's own members are never overwritten).
ProblemMap = Mapping[type[Exception], ProblemType]
_RFC_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (served as application/problem+json); extra members vary by type."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


class FieldError(BaseModel):
    """One reason a request is not valid: where (``["body", "items", 0, "quantity"]``) and why."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationProblemDetails(ProblemDetails):
    """A validation-error problem: the request's body or parameters broke the schema."""

    errors: list[FieldError]


def problem_responses(*documented: ProblemType | tuple[ProblemType, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for problem+json answers: for each status, the problem types it may
    carry, named in its description and each shown as an example, so a caller's developer (and
    ``tests/contracts``) can see every problem to act on. An entry is a type, or a type and what
    it means here."""
    by_status: dict[int, list[tuple[ProblemType, str]]] = {}
    for entry in documented:
        problem_type, meaning = entry if isinstance(entry, tuple) else (entry, "")
        by_status.setdefault(problem_type.status, []).append((problem_type, meaning))
    responses: dict[int | str, dict[str, Any]] = {}
    for status, entries in sorted(by_status.items()):
        description = "; ".join(f"{t.slug}: {meaning}" if meaning else t.slug for t, meaning in entries)
        examples = {
            t.slug: {"value": {"type": t.uri, "title": t.title or HTTPStatus(status).phrase, "status": status,
                               "detail": meaning or t.title or t.slug}}
            for t, meaning in entries
        }
        responses[status] = {"description": description, "content": {PROBLEM_JSON: {
            "schema": {"$ref": "#/components/schemas/ProblemDetails"}, "examples": examples}}}
    return responses


def problem_for(problem_type: ProblemType, exc: Exception) -> Problem:
    named = getattr(exc, "problem_members", None)
    members = vars(exc) if named is None else {name: getattr(exc, name) for name in named}
    extra = {name: value for name, value in members.items() if not name.startswith("_") and name not in _RFC_MEMBERS}
    return problem_type(str(exc), **extra)


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    # On the request's server span, so a trace search finds the requests that answered this problem.
    trace.get_current_span().set_attribute(PROBLEM_TYPE_ATTRIBUTE, problem.type)
    return JSONResponse(
        problem.body(instance), status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Turn every error FastAPI can raise into problem+json, so clients parse one shape (a
    service's domain errors are added by ``install_domain_error``)."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        problem = VALIDATION_ERROR("The request body or parameters are not valid.", errors=errors)
        return problem_response(problem, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if _is_unreadable_body(exc):
            # Same shape as a body that is JSON but breaks the schema: one shape for a bad body.
            problem = VALIDATION_ERROR("The request body is not valid JSON.", errors=[
                {"loc": ["body"], "msg": "not UTF-8 encoded JSON", "type": "json_invalid"}])
            return problem_response(problem, request.url.path)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        problem = Problem(exc.status_code, detail, headers=getattr(exc, "headers", None))
        return problem_response(problem, request.url.path)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        problem = INTERNAL_ERROR("An unexpected error occurred; it has been logged.")
        return problem_response(problem, request.url.path)


def _is_unreadable_body(exc: StarletteHTTPException) -> bool:
    """FastAPI answers 400 for a body ``json.loads`` cannot even decode (bytes that are not
    UTF-8: a UnicodeDecodeError, where malformed JSON raises JSONDecodeError and gets a 422)."""
    return exc.status_code == 400 and isinstance(exc.__cause__, ValueError)


def install_domain_error(app: FastAPI, error_class: type[Exception], problem_type: ProblemType) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(problem_for(problem_type, exc), request.url.path)

    app.add_exception_handler(error_class, handle)


# Problems every service may answer with.
VALIDATION_ERROR = ProblemType("validation-error", 422, "Validation failed")
INTERNAL_ERROR = ProblemType("internal-error", 500)
UNAUTHORIZED = ProblemType("unauthorized", 401, headers={"WWW-Authenticate": "Bearer"})
FORBIDDEN = ProblemType("forbidden", 403)
AUTH_UNAVAILABLE = ProblemType("auth-unavailable", 503)
NOT_READY = ProblemType("not-ready", 503)
OVERLOADED = ProblemType("overloaded", 503, headers={"Retry-After": "1"})
# Answered at the edge, before any parsing (limits.py, runner.py). Connection: close because the
# rest of what the client sends is not read.
PAYLOAD_TOO_LARGE = ProblemType("payload-too-large", 413, "Request body too large",
                                headers={"Connection": "close"})
HEADERS_TOO_LARGE = ProblemType("headers-too-large", 431, "Request header fields too large",
                                headers={"Connection": "close"})
MALFORMED_REQUEST = ProblemType("malformed-request", 400, "Malformed HTTP request")
MESSAGING_UNAVAILABLE = ProblemType("messaging-unavailable", 503, "Messaging state unavailable")

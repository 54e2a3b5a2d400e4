"""The errors a service's OpenAPI document shows: the ones it really answers, in the shape it
really sends (application/problem+json), without each route having to list the chassis' own.

What a route can answer is read off the route itself: its auth dependencies (401, 503 when the
signing keys cannot be fetched; 403 when a dependency on top of them checks a role), its path
parameters (404), its body (413, 422), and what the edge answers to any request (431, 503 when
shedding load).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.routing import APIRoute

from .auth import current_principal
from .errors import (
    AUTH_UNAVAILABLE,
    FORBIDDEN,
    HEADERS_TOO_LARGE,
    OVERLOADED,
    PAYLOAD_TOO_LARGE,
    PROBLEM_JSON,
    UNAUTHORIZED,
    VALIDATION_ERROR,
    ProblemDetails,
    ProblemType,
    ValidationProblemDetails,
    problem_responses,
)

NOT_FOUND = ProblemType("not-found", 404)
# FastAPI's own 422 body, which the service never sends (errors.install_problem_handlers).
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_PROBLEM_REF = "#/components/schemas/ProblemDetails"
_VALIDATION_REF = "#/components/schemas/ValidationProblemDetails"


def document_errors(app: FastAPI, unshed_paths: frozenset[str] | set[str] = frozenset()) -> None:
    """Make ``app.openapi()`` post-process FastAPI's document once, when it is first built."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _add_edge_errors(app, document, unshed_paths)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_edge_errors(app: FastAPI, document: dict[str, Any], unshed_paths) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ProblemDetails", ProblemDetails.model_json_schema())
    validation = ValidationProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(validation.pop("$defs", {}))
    schemas["ValidationProblemDetails"] = validation
    for route in _api_routes(app):
        if not route.include_in_schema:
            continue
        item = document.get("paths", {}).get(route.path_format, {})
        for method in route.methods:
            operation = item.get(method.lower())
            if operation is not None:
                _document_route(route, operation.setdefault("responses", {}), route.path_format in unshed_paths)
    for responses in _all_responses(document):
        _as_problem_json(responses)
    _drop_unused(schemas, document)


def _api_routes(app: FastAPI) -> Iterator[APIRoute]:
    """Every API route with its effective path, also inside included routers (FastAPI >= 0.16x
    keeps those as one lazy route each, seen through ``iter_route_contexts``)."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    for route in contexts(app.routes) if contexts else app.routes:
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def _document_route(route: APIRoute, responses: dict[str, Any], unshed: bool) -> None:
    calls = set(_dependency_calls(route.dependant))
    edge: list[tuple[ProblemType, str]] = [(HEADERS_TOO_LARGE, "the request headers are over the limit")]
    if current_principal in calls:
        edge += [(UNAUTHORIZED, "bearer token missing or not valid"),
                 (AUTH_UNAVAILABLE, "the signing keys cannot be fetched from users")]
        if _checks_a_role(route.dependant):
            edge.append((FORBIDDEN, "the token's role may not do this"))
    if route.dependant.path_params:
        edge.append((NOT_FOUND, "nothing at this path"))
    if route.body_field is not None:
        edge.append((PAYLOAD_TOO_LARGE, "the request body is over the limit"))
    if route.dependant.path_params or route.dependant.query_params or route.body_field is not None:
        edge.append((VALIDATION_ERROR, "invalid parameters or body"))
    if not unshed:
        edge.append((OVERLOADED, "too many requests in progress; retry after Retry-After"))
    for status, documented in problem_responses(*edge).items():
        key = str(status)
        present = responses.get(key)
        if present is None:
            if status == VALIDATION_ERROR.status:  # what install_problem_handlers sends
                documented["content"][PROBLEM_JSON]["schema"] = {"$ref": _VALIDATION_REF}
            responses[key] = documented
            continue
        # The route documented this status itself: keep its text, add the chassis' examples.
        content = present.setdefault("content", {})
        problem = content.get(PROBLEM_JSON)
        if problem is None:
            continue  # converted below, with the route's own description
        examples = problem.setdefault("examples", {})
        for slug, example in documented["content"][PROBLEM_JSON]["examples"].items():
            examples.setdefault(slug, example)


def _dependency_calls(dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _dependency_calls(dependency)


def _checks_a_role(dependant) -> bool:
    """A dependency built on ``current_principal`` (rather than the principal itself) exists to
    refuse some of them: ``AdminUser``, ``ServiceCaller``..."""
    for dependency in dependant.dependencies:
        if dependency.call is not current_principal and current_principal in set(_dependency_calls(dependency)):
            return True
        if _checks_a_role(dependency):
            return True
    return False


def _all_responses(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                yield operation["responses"]


def _as_problem_json(responses: dict[str, Any]) -> None:
    """Every error answer is application/problem+json, whatever the route declared."""
    for status, response in responses.items():
        if not (status.isdigit() and int(status) >= 400):
            continue
        content = response.setdefault("content", {})
        plain = content.pop("application/json", None)
        problem = content.setdefault(PROBLEM_JSON, {})
        if plain and "examples" in plain:
            problem.setdefault("examples", plain["examples"])
        ref = problem.get("schema", (plain or {}).get("schema", {})).get("$ref", "")
        if ref.endswith(_FASTAPI_VALIDATION_SCHEMAS):
            problem["schema"] = {"$ref": _VALIDATION_REF}
        elif not ref:
            problem["schema"] = {"$ref": _PROBLEM_REF}


def _drop_unused(schemas: dict[str, Any], document: dict[str, Any]) -> None:
    text = repr(document.get("paths", {}))
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        if f"#/components/schemas/{name}'" not in text:
            schemas.pop(name, None)

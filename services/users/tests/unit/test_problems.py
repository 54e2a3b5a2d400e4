"""Each refusal of users becomes the problem+json it always was: its type, status, headers, and no
extension members beyond the RFC's own."""

import pytest
from microshop_chassis.errors import PROBLEM_BASE, problem_for
from microshop_users.api import ERRORS
from microshop_users.domain import (
    AccountNotFound,
    HashingBusy,
    InvalidCredentials,
    UnknownServiceCredentials,
    WeakPassword,
)

BEARER = {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize(("error", "slug", "status", "headers"), [
    (WeakPassword("The password is too common or too simple."), "weak-password", 422, None),
    (HashingBusy(), "overloaded", 503, {"Retry-After": "1"}),
    (InvalidCredentials(), "invalid-credentials", 401, BEARER),
    (UnknownServiceCredentials(), "invalid-credentials", 401, None),  # a body secret, not a bearer token
    (AccountNotFound(), "not-found", 404, None),
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None)
def test_each_domain_error_has_its_problem(error, slug, status, headers):
    problem = problem_for(ERRORS[type(error)], error)
    body = problem.body()
    assert set(body) == {"type", "title", "status", "detail"}
    assert (body["type"], body["status"], body["detail"]) == (PROBLEM_BASE + slug, status, str(error))
    assert problem.headers == headers

"""Every operation of every service's OpenAPI document, fuzzed by schemathesis against the running
system, without a token and with a customer's, an admin's and a service's token: no server error,
and every answer as documented (status code, content type, body schema, headers).

The documents are those the services serve at /openapi.json (the stored copies in contracts/ are
checked against them by tests/contracts). Data is valid (positive) and invalid (negative), from a
fixed seed so a failure replays; each operation gets at most FUZZ_EXAMPLES cases per role (set
MICROSHOP_FUZZ_EXAMPLES to go deeper by hand). A test collects the failures of all its operations
and reports each with a curl line that reproduces it, rather than stopping at the first."""

from __future__ import annotations

import os
import re

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from microshop_chassis.services import SERVICES, routed
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
ROLES = ("anonymous", "customer", "admin", "service")
FUZZ_EXAMPLES = int(os.environ.get("MICROSHOP_FUZZ_EXAMPLES", "12"))
REQUEST_TIMEOUT = 10.0
MAX_LINE = 400  # characters of a reproduction line in the report

SETTINGS = hypothesis.settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,  # nothing written under the working directory
    derandomize=True,  # the same cases every run: a CI failure replays locally
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the curl line is reproduction enough
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)


def _operation_failures(operation, base_url: str, headers: dict[str, str]) -> list[str]:
    """Run one operation's cases; return a readable report per failing case (at most one: the
    first failure stops the operation, as hypothesis does)."""
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE))

    @SETTINGS
    @given(case=strategy)
    def run(case):
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=REQUEST_TIMEOUT)

    try:
        run()
    except (Exception, BaseExceptionGroup) as failure:  # schemathesis' FailureGroup is a BaseExceptionGroup
        return [_describe(operation, failure)]
    return []


def _describe(operation, failure: BaseException) -> str:
    """One failing case in a few lines: what was wrong, the status received, and a curl line."""
    text = "\n".join([str(failure), *getattr(failure, "__notes__", [])])
    if isinstance(failure, BaseExceptionGroup):  # schemathesis' checks: one entry per failed check
        problems = [f"{getattr(f, 'code', '')} {getattr(f, 'title', type(f).__name__)}: "
                    f"{' / '.join(str(getattr(f, 'message', f)).split(chr(10))[:2])}" for f in failure.exceptions]
    else:  # no answer at all (connection refused, timeout): a crashed or hung service
        problems = [f"{type(failure).__name__}: {str(failure)[:MAX_LINE]}"]
    statuses = [line.strip() for line in text.splitlines() if re.match(r"\s*\[\d{3}\] ", line)]
    curls = [line.strip()[:MAX_LINE] for line in text.splitlines() if line.strip().startswith("curl ")]
    return "\n    ".join([operation.label, *problems, *statuses[:1], *curls[:1]])


def _targets() -> list[tuple[str, str | None]]:
    """(service, None) for each service on its own port; (service, "gateway") for each service
    behind the gateway, through the document the gateway serves for it (only what it exposes)."""
    direct = [(spec.name, None) for spec in SERVICES]
    return direct + [(spec.name, "gateway") for spec in routed()]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("service", "via"), _targets(), ids=lambda value: value or "direct")
def test_every_operation_answers_as_documented(fuzzed_system, service, via, role):
    if via == "gateway":
        gateway = fuzzed_system.url("gateway")
        schema = schemathesis.openapi.from_url(f"{gateway}/api/{service}/openapi.json", timeout=REQUEST_TIMEOUT)
        base_url = gateway + schema.raw_schema["servers"][0]["url"]  # relative: /api/<service> or /api
    else:
        base_url = fuzzed_system.url(service)
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    token = fuzzed_system.tokens[role]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()  # a document schemathesis cannot read is itself a failure
        operations += 1
        failures += _operation_failures(operation, base_url, headers)
    assert operations, f"{service} documents no operation"
    if failures:
        # Schemathesis shows the Authorization header as [Filtered]: the role names the token.
        where = f"{service} via the gateway" if via else service
        pytest.fail(f"{len(failures)} of {operations} operations of {where} failed as {role}:\n"
                    + "\n".join(failures), pytrace=False)

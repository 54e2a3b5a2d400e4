"""The protocol between services, declared in contracts/, agrees with the code's names for it
(microshop_chassis.contracts) and with each producer's published OpenAPI document. Each service's
own tests check its end: producers build events from models checked against contracts/events,
and answer with the declared problems; orders' adapters turn every problem it acts on into a
business outcome (services/orders/tests/unit/test_protocol.py)."""

import json
from pathlib import Path

import pytest
from microshop_chassis.contracts import PROBLEM_TYPES, EventType
from microshop_chassis.services import names

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
CATALOG = json.loads((CONTRACTS / "problems.json").read_text())["problems"]


def test_every_event_type_has_its_schema_and_every_schema_its_type():
    schemas = {path.name.split(".")[0] for path in (CONTRACTS / "events").glob("*.v*.schema.json")}
    assert schemas == {event_type.value for event_type in EventType}


@pytest.mark.parametrize("event_type", EventType)
def test_an_event_types_source_is_a_service_the_envelope_allows(event_type):
    envelope = json.loads((CONTRACTS / "events" / "envelope.schema.json").read_text())
    assert event_type.source in envelope["properties"]["source"]["enum"]
    assert event_type.source in names()
    schema = json.loads((CONTRACTS / "events" / f"{event_type.value}.v1.schema.json").read_text())
    assert f"({event_type.source})" in schema["description"]  # the schema names its producer too


def test_the_declared_problem_types_are_the_codes_problem_types():
    declared = {(entry["type"], entry["status"], entry["title"]) for entry in CATALOG}
    assert declared == {(problem.uri, problem.status, problem.title) for problem in PROBLEM_TYPES}


@pytest.mark.parametrize("entry", CATALOG, ids=lambda entry: entry["type"].rsplit("/", 1)[-1])
def test_a_declared_problem_is_in_its_producers_openapi_at_its_status(entry):
    assert entry["producer"] in names() and set(entry["consumers"]) <= set(names())
    document = json.loads((CONTRACTS / "openapi" / f"{entry['producer']}.json").read_text())
    answering = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation.get("responses", {}).items()
        if status == str(entry["status"])
        for example in response.get("content", {}).get("application/problem+json", {}).get("examples", {}).values()
        if example["value"]["type"] == entry["type"]
    ]
    assert answering, f"{entry['producer']}'s OpenAPI does not say which operation answers {entry['type']}"

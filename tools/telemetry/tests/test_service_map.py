"""The service map's aggregation: edges from the spans alone (client to server across services,
producer to broker to consumer, service to its database, calls to outside systems), with each
edge's rate, error rate and p99; and the fixed layout that draws it."""

from __future__ import annotations

import itertools

import pytest
from microshop_telemetry.servicemap import (
    BROKER,
    DATABASE,
    OUTSIDE,
    SERVICE,
    build_service_map,
    layout,
    percentile,
)

_ids = itertools.count(1)


def span(service: str, kind: str, *, parent: dict | None = None, duration_ms: float = 10.0, status: str = "ok",
         **attributes) -> dict:
    return {"trace_id": "ab" * 16, "span_id": f"{next(_ids):016x}", "parent_span_id": parent and parent["span_id"],
            "service": service, "name": f"{kind} span", "kind": kind, "duration_ms": duration_ms, "status": status,
            "attributes": {key.replace("_", "."): value for key, value in attributes.items()}}


def call(caller: str, callee: str, *, duration_ms: float = 10.0, status: str = "ok") -> list[dict]:
    """A client span of the caller and the callee's server span under it."""
    client = span(caller, "client", duration_ms=duration_ms, status=status, server_address=callee)
    return [client, span(callee, "server", parent=client, duration_ms=duration_ms - 1, status=status)]


def test_a_client_span_and_its_server_child_in_another_service_make_one_edge():
    spans = [span("gateway", "server"), *call("gateway", "orders"), *call("orders", "payments")]
    service_map = build_service_map(spans, 60)
    assert set(service_map.edges) == {("gateway", "orders"), ("orders", "payments")}
    assert service_map.nodes == {"gateway": SERVICE, "orders": SERVICE, "payments": SERVICE}


def test_the_callee_comes_from_the_server_span_even_when_the_address_says_otherwise():
    # Through a chaos proxy or a replica the address is not the service's name; the server span is.
    client = span("orders", "client", server_address="127.0.0.1:9999")
    service_map = build_service_map([client, span("payments", "server", parent=client)], 60)
    assert set(service_map.edges) == {("orders", "payments")}


def test_a_call_without_a_received_server_span_goes_to_its_address_an_outside_system():
    spans = [span("payments", "client", server_address="card-processor", status="error"),
             span("payments", "client", server_address="card-processor")]
    service_map = build_service_map(spans, 60)
    edge = service_map.edges[("payments", "card-processor")]
    assert service_map.nodes["card-processor"] == OUTSIDE
    assert (edge.requests, edge.errors, edge.error_rate) == (2, 1, 0.5)


def test_a_client_span_to_a_service_whose_server_span_is_missing_still_names_it_as_a_service():
    spans = [span("orders", "client", server_address="inventory"), span("inventory", "server")]
    assert build_service_map(spans, 60).nodes["inventory"] == SERVICE


def test_publish_and_consume_go_through_the_broker_and_a_batch_span_is_not_counted_twice():
    publish = span("orders", "producer", messaging_message_id="e1")
    consumed = [span("reports", "consumer", parent=publish, messaging_message_id="e1"),
                span("notifications", "consumer", parent=publish, messaging_message_id="e1"),
                span("reports", "consumer")]  # the batch's own span: no message id
    service_map = build_service_map([publish, *consumed], 60)
    assert set(service_map.edges) == {("orders", BROKER), (BROKER, "reports"), (BROKER, "notifications")}
    assert service_map.edges[(BROKER, "reports")].requests == 1
    assert service_map.nodes[BROKER] == OUTSIDE


def test_statement_spans_make_one_database_node_per_service():
    spans = [span("orders", "client", db_system_name="sqlite"), span("orders", "client", db_system_name="sqlite"),
             span("payments", "client", db_system_name="postgresql")]
    service_map = build_service_map(spans, 60)
    assert service_map.nodes["orders db (sqlite)"] == DATABASE
    assert service_map.nodes["payments db (postgresql)"] == DATABASE
    assert service_map.edges[("orders", "orders db (sqlite)")].requests == 2


def test_each_edge_has_its_rate_error_rate_and_p99_over_the_window():
    spans = [s for index in range(100) for s in call("gateway", "orders", duration_ms=index + 1.0,
                                                     status="error" if index % 10 == 0 else "ok")]
    edge = build_service_map(spans, 50).edges[("gateway", "orders")]
    assert edge.rate_per_second(50) == 2.0
    assert edge.error_rate == pytest.approx(0.1)
    assert edge.p99_ms == 99.0


def test_internal_and_server_spans_alone_make_nodes_but_no_edge():
    service_map = build_service_map([span("orders", "internal"), span("users", "server")], 60)
    assert service_map.edges == {} and set(service_map.nodes) == {"orders", "users"}


@pytest.mark.parametrize(("values", "expected"), [([], 0.0), ([5.0], 5.0), ([3.0, 1.0, 2.0], 3.0),
                                                  (list(map(float, range(1, 201))), 198.0)])
def test_the_p99_is_a_value_that_was_observed(values, expected):
    assert percentile(values, 0.99) == expected


def test_the_layout_puts_the_gateway_left_services_middle_and_outside_systems_right():
    spans = [*call("gateway", "orders"), *call("orders", "payments"),
             span("payments", "client", server_address="card-processor"),
             span("orders", "producer", messaging_message_id="e"), span("orders", "client", db_system_name="sqlite")]
    nodes, edges, width, height = layout(build_service_map(spans, 60))
    x = {node.name: node.x for node in nodes}
    y = {node.name: node.y for node in nodes}
    assert x["gateway"] < x["orders"] == x["payments"] < x["orders db (sqlite)"] < x[BROKER] == x["card-processor"]
    assert y["orders db (sqlite)"] == y["orders"]  # a database sits on its service's row
    assert len(edges) == 5 and all(edge.path.startswith("M") for edge in edges)
    assert all(node.x + 170 <= width and node.y + 34 <= height for node in nodes)


def test_a_sampled_span_counts_for_the_spans_it_stands_for_in_rates_and_error_rates():
    kept = call("gateway", "orders")
    kept[0]["weight"] = 10.0  # one trace of ten kept
    failed = call("gateway", "orders", status="error")
    edge = build_service_map([*kept, *failed], 60).edges[("gateway", "orders")]
    assert edge.requests == 11 and edge.rate_per_second(60) == pytest.approx(11 / 60)
    assert edge.error_rate == pytest.approx(1 / 11)
    assert len(edge.durations_ms) == 2  # the p99 is over the spans kept

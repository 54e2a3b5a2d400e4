"""The service map: who called whom over a window of spans, with each edge's rate, error rate and
p99, and a fixed layout to draw it (gateway left, services in the middle, outside systems right).

Edges come from the spans alone, as the services record them (libs/chassis):
- a client span whose child is a server span of another service: caller -> callee; a client span
  with no such child (the callee's span not received, or an outside system such as the card
  processor) goes to its ``server.address``;
- a producer span: service -> the broker; a consumer span of one message: the broker -> service;
- a database span (``db.system.name``, per transaction or statement): service -> that service's database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

BROKER = "nats"
GATEWAY = "gateway"
SERVICE, DATABASE, OUTSIDE = "service", "database", "outside"


@dataclass
class Edge:
    """Requests and errors count each span for the spans it stands for (its ``weight``: a sampled
    trace's spans stand for the traces not kept); the p99 is over the spans kept."""
    source: str
    target: str
    durations_ms: list[float] = field(default_factory=list)
    weighted_requests: float = 0.0
    errors: float = 0.0

    @property
    def requests(self) -> int:
        return round(self.weighted_requests)

    def rate_per_second(self, window_seconds: float) -> float:
        return self.weighted_requests / window_seconds if window_seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.weighted_requests if self.weighted_requests else 0.0

    @property
    def p99_ms(self) -> float:
        return percentile(self.durations_ms, 0.99)


@dataclass
class ServiceMap:
    nodes: dict[str, str]  # name -> SERVICE, DATABASE or OUTSIDE
    edges: dict[tuple[str, str], Edge]
    window_seconds: float


def database_node(service: str, system: str) -> str:
    return f"{service} db ({system})"


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: a value that was observed, never an interpolation."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def build_service_map(spans: Iterable[Mapping[str, Any]], window_seconds: float) -> ServiceMap:
    """The map of these spans (as the store returns them, attributes decoded)."""
    spans = list(spans)
    by_id = {span["span_id"]: span for span in spans}
    # A client span's callee, when its server span was received: its child of another service.
    callee_of: dict[str, str] = {}
    for span in spans:
        parent = by_id.get(span.get("parent_span_id") or "")
        if span["kind"] == "server" and parent and parent["kind"] == "client" and parent["service"] != span["service"]:
            callee_of[parent["span_id"]] = span["service"]

    nodes: dict[str, str] = {}
    edges: dict[tuple[str, str], Edge] = {}

    def record(source: str, target: str, span: Mapping[str, Any]) -> None:
        edge = edges.setdefault((source, target), Edge(source, target))
        weight = span.get("weight", 1.0)
        edge.durations_ms.append(span["duration_ms"])
        edge.weighted_requests += weight
        edge.errors += weight if span["status"] == "error" else 0.0

    for span in spans:
        service, attributes = span["service"], span.get("attributes") or {}
        nodes.setdefault(service, SERVICE)
        if span["kind"] == "client" and "db.system.name" in attributes:
            database = database_node(service, attributes["db.system.name"])
            nodes.setdefault(database, DATABASE)
            record(service, database, span)
        elif span["kind"] == "client":
            target = callee_of.get(span["span_id"]) or attributes.get("server.address")
            if target:
                nodes.setdefault(target, OUTSIDE)
                record(service, target, span)
        elif span["kind"] == "producer":
            nodes.setdefault(BROKER, OUTSIDE)
            record(service, BROKER, span)
        elif span["kind"] == "consumer" and "messaging.message.id" in attributes:
            # One per message: a batch's own span (no message id) would count its messages twice.
            nodes.setdefault(BROKER, OUTSIDE)
            record(BROKER, service, span)
    # A name first seen as a call's address and later as a span's service is a service.
    for span in spans:
        nodes[span["service"]] = SERVICE
    return ServiceMap(nodes=nodes, edges=edges, window_seconds=window_seconds)


# -- layout ------------------------------------------------------------------------------------------

NODE_WIDTH, NODE_HEIGHT, ROW_HEIGHT = 170, 34, 62
GATEWAY_X, SERVICES_X, DATABASES_X, OUTSIDE_X = 20, 400, 690, 1070
MARGIN_TOP = 20


@dataclass(frozen=True)
class PlacedNode:
    name: str
    kind: str
    x: int
    y: int

    @property
    def center(self) -> tuple[float, float]:
        return self.x + NODE_WIDTH / 2, self.y + NODE_HEIGHT / 2


@dataclass(frozen=True)
class PlacedEdge:
    edge: Edge
    path: str  # SVG path data
    label_x: float
    label_y: float
    label: str


def layout(service_map: ServiceMap) -> tuple[list[PlacedNode], list[PlacedEdge], int, int]:
    """A fixed layout: the gateway left, the other services in a column, each service's database on
    its row to the right, then the broker and the outside systems. Edges are straight between
    columns, arcs within the services' column, and pass between the databases on their way right."""
    kinds = service_map.nodes
    services = sorted(name for name, kind in kinds.items() if kind == SERVICE and name != GATEWAY)
    outside = sorted((name for name, kind in kinds.items() if kind == OUTSIDE), key=lambda n: (n != BROKER, n))
    owner_of = {database: source for source, database in service_map.edges if kinds.get(database) == DATABASE}
    rows = max(len(services), len(outside), 1)
    height = MARGIN_TOP * 2 + rows * ROW_HEIGHT

    def top(index: int, count: int) -> int:  # a column centred vertically
        return MARGIN_TOP + (rows - count) * ROW_HEIGHT // 2 + index * ROW_HEIGHT

    placed: dict[str, PlacedNode] = {}
    if GATEWAY in kinds:
        placed[GATEWAY] = PlacedNode(GATEWAY, SERVICE, GATEWAY_X, top(0, 1))
    for index, name in enumerate(services):
        placed[name] = PlacedNode(name, SERVICE, SERVICES_X, top(index, len(services)))
    for index, name in enumerate(outside):
        placed[name] = PlacedNode(name, OUTSIDE, OUTSIDE_X, top(index, len(outside)))
    spare = iter(range(len(services), 10_000))  # a database without a known owner goes below
    for name in sorted(name for name, kind in kinds.items() if kind == DATABASE):
        owner = placed.get(owner_of.get(name, ""))
        y = owner.y if owner is not None and owner.x == SERVICES_X else top(next(spare), len(services))
        placed[name] = PlacedNode(name, DATABASE, DATABASES_X, y)
        height = max(height, y + NODE_HEIGHT + MARGIN_TOP)
    edges = [_place_edge(edge, placed[edge.source], placed[edge.target], service_map.window_seconds)
             for edge in sorted(service_map.edges.values(), key=lambda e: (e.source, e.target))]
    return list(placed.values()), edges, OUTSIDE_X + NODE_WIDTH + 20, height


def _place_edge(edge: Edge, source: PlacedNode, target: PlacedNode, window_seconds: float) -> PlacedEdge:
    # Short, to fit between two columns: requests/s, error rate, p99 (the table below says it in full).
    label = f"{edge.rate_per_second(window_seconds):.2f}/s · {edge.error_rate:.0%} · p99 {edge.p99_ms:.0f} ms"
    sy, ty = source.center[1], target.center[1]
    if source.x == target.x:  # within the services' column: an arc bulging left, clear of the nodes
        x = source.x
        bulge = x - 50 - abs(ty - sy) / 5
        return PlacedEdge(edge, f"M{x},{sy} C{bulge},{sy} {bulge},{ty} {x},{ty}", bulge + 4, (sy + ty) / 2, label)
    if source.x > target.x:  # leftward: the broker delivering to a consumer
        x1, x2 = source.x, target.x + NODE_WIDTH
    else:
        x1, x2 = source.x + NODE_WIDTH, target.x
    if source.x == SERVICES_X and target.x == OUTSIDE_X or source.x == OUTSIDE_X and target.x == SERVICES_X:
        # Through a gap beside the service's row in the databases' column, not across a database:
        # the broker's edges below the row, the other outside systems' above it.
        service, far = (source, target) if source.x == SERVICES_X else (target, source)
        # Each in its own third of the gap, so two rows' edges sharing a gap stay apart.
        third = (ROW_HEIGHT - NODE_HEIGHT) / 3
        gap_y = service.y + NODE_HEIGHT + third if far.name == BROKER else service.y - third
        near_x, far_x = SERVICES_X + NODE_WIDTH, far.x
        points = [(near_x, service.center[1]), (DATABASES_X - 20, gap_y), (DATABASES_X + NODE_WIDTH + 20, gap_y),
                  (far_x, far.center[1])]
        if service is target:
            points.reverse()
        path = "M" + " L".join(f"{x},{y}" for x, y in points)
        return PlacedEdge(edge, path, DATABASES_X + 8, gap_y - 3, label)
    if target.kind == DATABASE:  # a short level line: the label just above it
        return PlacedEdge(edge, f"M{x1},{sy} L{x2},{ty}", x1 + 4, sy - 4, label)
    return PlacedEdge(edge, f"M{x1},{sy} L{x2},{ty}", x1 + (x2 - x1) * 0.3, sy + (ty - sy) * 0.3 - 4, label)

"""Toxics: the faults a proxy injects, built and range-checked from the admin API's JSON.

All validation happens here, once, when a toxic is created: a toxic object is therefore always valid
and the proxy's per-chunk path never re-checks attributes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields
from functools import lru_cache
from http import HTTPStatus
from typing import Any, ClassVar

INJECTED_FAULT_TYPE = "https://microshop.dev/problems/injected-fault"


class ToxicError(ValueError):
    """Unknown toxic type or invalid attributes (the admin API answers 422)."""


@dataclass(frozen=True)
class Attribute:
    """How one JSON attribute of a toxic is checked: its kind, its inclusive range and its default."""

    kind: type  # int, float or bool
    low: float = 0
    high: float = 0
    default: Any = None  # None: required


@dataclass(frozen=True)
class Toxic:
    """Base of every toxic: a unique name on its proxy plus typed, validated attributes."""

    type: ClassVar[str]
    attributes: ClassVar[dict[str, Attribute]]

    name: str

    def to_json(self) -> dict[str, Any]:
        attrs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        return {"name": self.name, "type": self.type, "attributes": attrs}


@dataclass(frozen=True)
class Latency(Toxic):
    """Delays each upstream->client chunk by latency ± uniform(0..jitter), without accumulating."""

    type: ClassVar[str] = "latency"
    attributes: ClassVar[dict[str, Attribute]] = {
        "latency_ms": Attribute(float, 0, 60_000),
        "jitter_ms": Attribute(float, 0, 60_000, 0.0),
    }

    latency_ms: float
    jitter_ms: float = 0.0

    def delay_seconds(self, rng: random.Random) -> float:
        delay = self.latency_ms
        if self.jitter_ms:
            delay += rng.uniform(-self.jitter_ms, self.jitter_ms)
        return max(0.0, delay) / 1000.0


@dataclass(frozen=True)
class Error(Toxic):
    """Answers a new HTTP request itself with an error status (probability ``rate``); upstream never sees it."""

    type: ClassVar[str] = "error"
    attributes: ClassVar[dict[str, Attribute]] = {
        "rate": Attribute(float, 0.0, 1.0),
        "status": Attribute(int, 500, 599, 503),
    }

    rate: float
    status: int = 503

    def response(self) -> bytes:
        return injected_error_response(self.status)


@dataclass(frozen=True)
class ResetPeer(Toxic):
    """Resets the client (RST) on a new request, by default after upstream did the work (unknown outcome)."""

    type: ClassVar[str] = "reset_peer"
    attributes: ClassVar[dict[str, Attribute]] = {
        "rate": Attribute(float, 0.0, 1.0),
        "after_request": Attribute(bool, default=True),
    }

    rate: float
    after_request: bool = True


@dataclass(frozen=True)
class Timeout(Toxic):
    """Blackhole: nothing flows either way while it exists, yet connections stay open (callers time out)."""

    type: ClassVar[str] = "timeout"
    attributes: ClassVar[dict[str, Attribute]] = {}


@dataclass(frozen=True)
class Bandwidth(Toxic):
    """Limits upstream->client throughput to ``rate_kbps`` kilobytes (1000 bytes) per second."""

    type: ClassVar[str] = "bandwidth"
    attributes: ClassVar[dict[str, Attribute]] = {
        "rate_kbps": Attribute(float, 1, 1_000_000),
    }

    rate_kbps: float

    @property
    def bytes_per_second(self) -> float:
        return self.rate_kbps * 1000.0


TOXIC_TYPES: dict[str, type[Toxic]] = {cls.type: cls for cls in (Latency, Error, ResetPeer, Timeout, Bandwidth)}

# Toxics that decide, once per new HTTP request, whether to break it.
RequestToxic = Error | ResetPeer


def _check(toxic_type: str, key: str, spec: Attribute, value: Any) -> Any:
    where = f"{toxic_type}.{key}"
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ToxicError(f"{where} must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToxicError(f"{where} must be a number")
    if spec.kind is int:
        if value != int(value):
            raise ToxicError(f"{where} must be an integer")
        value = int(value)
    else:
        value = float(value)
    if not spec.low <= value <= spec.high:
        raise ToxicError(f"{where} must be in {spec.low:g}..{spec.high:g}, got {value:g}")
    return value


def parse_toxic(body: Any) -> Toxic:
    """A toxic from ``{"type", "name"?, "attributes"?}``; raises ToxicError on anything invalid."""
    if not isinstance(body, dict):
        raise ToxicError("the body must be a JSON object")
    unknown_fields = sorted(set(body) - {"type", "name", "attributes"})
    if unknown_fields:
        raise ToxicError(f"unknown field(s): {', '.join(unknown_fields)}")
    toxic_type = body.get("type")
    cls = TOXIC_TYPES.get(toxic_type) if isinstance(toxic_type, str) else None
    if cls is None:
        raise ToxicError(f"type must be one of {', '.join(TOXIC_TYPES)}, got {toxic_type!r}")
    name = body.get("name", toxic_type)
    if not isinstance(name, str) or not name or len(name) > 100 or "/" in name:
        raise ToxicError("name must be a non-empty string of at most 100 characters without '/'")
    attributes = body.get("attributes", {})
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise ToxicError("attributes must be a JSON object")
    unknown = sorted(set(attributes) - set(cls.attributes))
    if unknown:
        raise ToxicError(f"unknown attribute(s) for {toxic_type}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, spec in cls.attributes.items():
        if key in attributes:
            values[key] = _check(toxic_type, key, spec, attributes[key])
        elif spec.default is None:
            raise ToxicError(f"{toxic_type}.{key} is required")
        else:
            values[key] = spec.default
    return cls(name=name, **values)


@lru_cache(maxsize=128)
def injected_error_response(status: int) -> bytes:
    """The complete HTTP/1.1 response the error toxic sends instead of forwarding a request."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Injected Fault"
    body = json.dumps(
        {
            "type": INJECTED_FAULT_TYPE,
            "title": phrase,
            "status": status,
            "detail": "fault injected by microshop chaos proxy",
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "Retry-After: 1\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body

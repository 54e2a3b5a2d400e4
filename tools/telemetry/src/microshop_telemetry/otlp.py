"""OTLP/HTTP trace payloads: the two encodings of an ExportTraceServiceRequest in, the answers the
specification asks for out, and each span flattened into the row the store keeps.

https://opentelemetry.io/docs/specs/otlp/#otlphttp
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from microshop_chassis.telemetry import sampling_weight
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ENCODINGS = (PROTOBUF, JSON)

# The span attribute that makes a trace findable by order (set by the orders saga and its callees).
ORDER_ID_ATTRIBUTE = "microshop.order.id"
# What OpenTelemetry SDKs call a service whose resource names none.
UNKNOWN_SERVICE = "unknown_service"
# google.rpc.Code of the Status an error answer carries.
INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8

# The id fields OTLP/JSON writes as hex where the protobuf JSON mapping would use base64, under both
# names a receiver must accept (lowerCamelCase, and the proto field name).
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class BadPayload(ValueError):
    """The body is not an ExportTraceServiceRequest in the encoding it declares."""


class TooLarge(ValueError):
    """The body, once decompressed, is over the receiver's bound."""


def decompress(body: bytes, content_encoding: str, limit: int) -> bytes:
    """The body without its content coding (gzip or deflate), never more than ``limit`` bytes: a
    small compressed body may expand to gigabytes."""
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(coding)
    if wbits is None:
        raise ValueError(f"unsupported Content-Encoding {content_encoding!r}")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadPayload(f"the body is not valid {coding}: {exc}") from None
    if len(plain) > limit:
        raise TooLarge(f"the decompressed body is over {limit} bytes")
    if not inflater.eof:
        raise BadPayload(f"the {coding} body is truncated")
    return plain


def decode_request(body: bytes, media_type: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if media_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadPayload(f"not a protobuf ExportTraceServiceRequest: {exc}") from None
        return request
    try:
        payload = json.loads(body)
        _hex_ids_to_base64(payload)
        # Unknown fields are skipped, as the specification asks of OTLP/JSON receivers: a newer
        # exporter may send fields this version of the messages does not have.
        json_format.ParseDict(payload, request, ignore_unknown_fields=True)
    except (ValueError, TypeError, AttributeError, json_format.ParseError) as exc:
        raise BadPayload(f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def _hex_ids_to_base64(payload: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex, not base64 as the protobuf JSON mapping does
    for bytes: turn them into base64 where spans and their links carry them."""
    for resource_spans in _items(payload, "resourceSpans", "resource_spans"):
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for span in _items(scope_spans, "spans"):
                _convert_ids(span)
                for link in _items(span, "links"):
                    _convert_ids(link)


def _items(message: Any, *names: str) -> list:
    if not isinstance(message, dict):
        raise BadPayload("expected a JSON object")
    for name in names:
        if name in message:
            value = message[name]
            if not isinstance(value, list):
                raise BadPayload(f"{name} must be a list")
            return value
    return []


def _convert_ids(message: dict) -> None:
    for field in _ID_FIELDS:
        value = message.get(field)
        if isinstance(value, str):
            try:
                message[field] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise BadPayload(f"{field} {value!r} is not hex") from None


def encode(message: Any, media_type: str) -> bytes:
    if media_type == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


def export_response(rejected: int, reason: str, media_type: str) -> bytes:
    """The success answer: empty, or naming the spans refused (the spec's partial success)."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = reason
    return encode(response, media_type)


def status_body(code: int, message: str, media_type: str) -> bytes:
    """A google.rpc.Status (the body of an OTLP error answer) in the request's encoding. Written by
    hand: two fields, where the generated class would need one more dependency."""
    if media_type == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


# --- spans to rows ------------------------------------------------------------------------------


def span_rows(request: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], int]:
    """Every valid span of the request as a row of the store, and how many were refused (a trace
    id of 16 bytes and a span id of 8, neither all zeros, are what makes a span addressable)."""
    rows: list[dict[str, Any]] = []
    rejected = 0
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name") or UNKNOWN_SERVICE)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if not _valid_id(span.trace_id, 16) or not _valid_id(span.span_id, 8):
                    rejected += 1
                    continue
                rows.append(span_row(span, service))
    return rows, rejected


def span_row(span: Span, service: str) -> dict[str, Any]:
    span_attributes = attributes(span.attributes)
    order_id = span_attributes.get(ORDER_ID_ATTRIBUTE)
    parent = span.parent_span_id.hex() if _valid_id(span.parent_span_id, 8) else None
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": parent,
        "service": service,
        "name": span.name,
        "kind": _enum_name(Span.SpanKind, span.kind, "SPAN_KIND_"),
        "start_ns": span.start_time_unix_nano,
        "end_ns": span.end_time_unix_nano,
        "duration_ms": max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        "status": _STATUSES.get(span.status.code, "unset"),
        "status_message": span.status.message,
        "attributes": span_attributes,
        "events": [
            {"name": event.name, "time_ns": event.time_unix_nano, "attributes": attributes(event.attributes)}
            for event in span.events
        ],
        "order_id": None if order_id is None else str(order_id),
        "weight": sampling_weight(span.trace_state),
    }


_STATUSES = {Status.STATUS_CODE_OK: "ok", Status.STATUS_CODE_ERROR: "error"}


def attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: any_value(pair.value) for pair in pairs}


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _valid_id(raw: bytes, size: int) -> bool:
    return len(raw) == size and raw != bytes(size)


def _enum_name(enum: Any, number: int, prefix: str) -> str:
    try:
        return enum.Name(number).removeprefix(prefix).lower()
    except ValueError:  # a value a newer version of the messages added
        return str(number)


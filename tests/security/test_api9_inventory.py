"""API9:2023 Improper inventory management: what the gateway routes is exactly the public API
the README lists, no more (an internal endpoint routed by accident was finding 8) and no less.
Two views: the documents the gateway serves for each service, and probing the gateway with every
operation of every service's own document (an admin token: what is not listed must be 404)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from microshop_chassis.services import routed

pytestmark = pytest.mark.asyncio(loop_scope="session")

README = Path(__file__).resolve().parents[2] / "README.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def normalised(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/")


def readme_api() -> set[tuple[str, str]]:
    """(method, path) of each call in README.md's table "The public API (through the gateway)".
    A path without a method takes the previous one's; one without /api/<service> its prefix."""
    text = README.read_text()
    table = text.split("## The public API", 1)[1].split("\n## ", 1)[0]
    calls: set[tuple[str, str]] = set()
    for row in (line for line in table.splitlines() if line.startswith("| `")):
        method, prefix = None, ""
        for token in re.findall(r"`([^`]+)`", row.split("|")[1]):
            match = re.fullmatch(r"(?:(GET|POST|PUT|PATCH|DELETE) )?(/\S*)", token.strip())
            if not match:
                continue  # a body shape such as `{email, password}`
            method = match.group(1) or method
            path = match.group(2)
            if not path.startswith("/api/") and path != "/health":
                path = prefix + path
            prefix = "/".join(path.split("/")[:3])  # /api/<service>
            calls.add((method, normalised(path)))
    return {call for call in calls if call[1].startswith("/api/")}


async def test_the_readme_lists_the_public_api():
    calls = readme_api()
    assert ("POST", "/api/orders") in calls and ("GET", "/api/inventory/products/{}") in calls, calls


async def gateway_documented(secured) -> set[tuple[str, str]]:
    documented = set()
    for spec in routed():
        document = (await secured.gateway().get(f"/api/{spec.name}/openapi.json")).body
        server = document["servers"][0]["url"]
        for path, operations in document["paths"].items():
            documented |= {(method.upper(), normalised(server + path)) for method in operations
                           if method.upper() in METHODS}
    return documented


async def test_the_gateway_documents_exactly_the_public_api(secured):
    documented, listed = await gateway_documented(secured), readme_api()
    assert documented == listed, (f"routed but not in the README: {sorted(documented - listed)}; "
                                  f"in the README but not routed: {sorted(listed - documented)}")


async def test_the_gateway_routes_nothing_beyond_the_public_api(secured):
    listed = readme_api()
    routed_extra: set[str] = set()
    for spec in routed():
        document = (await secured.direct(spec.name).get("/openapi.json")).body
        public_prefix = f"/api/{spec.name}"
        resource = spec.gateway_prefix or ""  # /api/orders/x -> the service's /orders/x
        for path, operations in document["paths"].items():
            if resource and not path.startswith(resource):
                public = None  # outside the service's public collection: no public path reaches it
            else:
                public = public_prefix + path[len(resource):]
            candidates = [public] if public else []
            # Also the naive mapping /api/<service>/<its own path>, which a prefix-only router would forward.
            candidates.append(public_prefix + path)
            for method in (m.upper() for m in operations if m.upper() in METHODS):
                for candidate in candidates:
                    if (method, normalised(candidate)) in listed:
                        continue
                    concrete = re.sub(r"\{[^}]*\}", lambda _: uuid.uuid4().hex[:12], candidate)
                    reply = await secured.gateway(secured.admin.token).request(
                        method, concrete, json={}, headers={"Idempotency-Key": str(uuid.uuid4())})
                    if reply.status != 404:
                        routed_extra.add(f"{method} {candidate} -> {reply.status} (service path {path})")
    assert not routed_extra, "the gateway routes calls the README does not list:\n" + "\n".join(sorted(routed_extra))

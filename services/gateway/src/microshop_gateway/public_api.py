"""What the gateway lets through: the public API of each service, method by method and path by
path (README.md, "The public API", and each service's README). Anything else under
``/api/<service>/`` answers 404, exactly like a path that does not exist, so the endpoints meant
for other services (inventory's reservations, payments' charges and refunds, users' service
tokens) and the operations endpoints (/admin/..., /metrics) are not reachable from outside.

Paths are the service's own (after the gateway prefix is mapped: ``/api/orders/7`` is orders'
``/orders/7``); ``{name}`` stands for one path segment.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublicRoute:
    method: str
    path: str

    def matches(self, method: str, path: str) -> bool:
        """``path`` as the service will route it: percent-decoded, as the gateway received it."""
        if method != self.method:
            return False
        wanted, given = self.path.strip("/").split("/"), path.strip("/").split("/")
        return len(wanted) == len(given) and all(
            (part.startswith("{") and segment not in ("", ".", "..")) or part == segment
            for part, segment in zip(wanted, given, strict=True)
        )


def routes(*pairs: str) -> tuple[PublicRoute, ...]:
    """``routes("GET /a", "POST /b/{id}")``."""
    return tuple(PublicRoute(*pair.split(" ", 1)) for pair in pairs)


PUBLIC_API: dict[str, tuple[PublicRoute, ...]] = {
    "users": routes("POST /register", "POST /login", "GET /me",
                    "GET /users"),  # admin
    "inventory": routes("GET /products", "GET /products/{sku}",
                        # admin: the catalog, stock and the list of reservations (not one, not
                        # their commit, release or restock: those are orders' calls)
                        "PUT /products/{sku}", "GET /stock", "GET /stock/summary", "PUT /stock/{sku}",
                        "GET /reservations"),
    "orders": routes("POST /orders", "GET /orders", "GET /orders/{order_id}", "POST /orders/{order_id}/cancel",
                     "GET /orders/{order_id}/saga"),  # admin
    # Not the payment methods, charges or refunds: only orders calls those.
    "payments": routes("GET /payments", "GET /payments/{order_id}"),
    "notifications": routes("GET /notifications", "GET /notifications/{notification_id}"),
    "reports": routes("GET /sales", "GET /status", "POST /rebuild"),  # admin
}


def is_public(table: dict[str, tuple[PublicRoute, ...]], service: str, method: str, path: str) -> bool:
    return any(route.matches(method, path) for route in table.get(service, ()))

"""Typed dependencies for routes, wired by the service's composition root.

A route names each collaborator it needs by its type::

    OrdersDep = Annotated[Orders, Provide(Orders)]

    @router.get("/orders/{order_id}")
    async def get_order(order_id: str, orders: OrdersDep) -> OrderOut: ...

and the service's bootstrap provides one: ``host.provide(Orders, orders)``. A test swaps it by
building the service with a fake, or with ``app.dependency_overrides[Provided(Orders)]``.
(FastAPI's dependency overrides are not used for the wiring itself: with any override present,
FastAPI re-analyses every dependency of every request.)
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request

T = TypeVar("T")


class ServiceApp(FastAPI):
    """The FastAPI app of one service, holding what its composition root provides."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.provided: dict[type, Any] = {}

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, which also defines ``ProblemDetails``: the schema every
        application/problem+json answer refers to (``errors.problem_responses``)."""
        if self.openapi_schema is None:
            from .errors import ProblemDetails

            document = super().openapi()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault("ProblemDetails", ProblemDetails.model_json_schema())
        return self.openapi_schema


class Provided:
    """The dependency that hands a route the instance provided for ``kind``."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
    async def __call__(self, request: Request) -> Any:
        app = request.app
        try:
            return app.provided[self.kind]
        except (AttributeError, KeyError):
            raise LookupError(f"{self.kind.__name__} is not provided to this app's routes "
                              f"(the bootstrap should call host.provide({self.kind.__name__}, ...))") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Provided) and other.kind is self.kind

    def __hash__(self) -> int:
        return hash((Provided, self.kind))


def Provide(kind: type[T]) -> Any:  # noqa: N802 - reads like Depends, which it returns
    return Depends(Provided(kind))


def provide(app: FastAPI, kind: type[T], instance: T) -> None:
    app.provided[kind] = instance  # type: ignore[attr-defined]

"""List endpoints share one shape: ``?limit=&offset=`` in, ``{"items": [...], "total": N}`` out."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

T = TypeVar("T")


class PageParams(BaseModel):
    limit: int
    offset: int


# Far beyond any list here, and far below what SQLite and PostgreSQL take as an integer (2^63):
# a larger offset was a 500 from the database.
MAX_OFFSET = 10_000_000


async def _page_params(  # async: a plain def would run in the thread pool on every list request
    limit: Annotated[int, Query(ge=1, le=1000, description="Items per page (max 1000).")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"Items to skip (max {MAX_OFFSET}).")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(_page_params)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int

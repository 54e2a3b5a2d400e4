"""The shared list parameters: ?limit= (default 100, at most 1000) and ?offset= (>= 0)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from microshop_chassis.app import create_app
from microshop_chassis.errors import PROBLEM_JSON
from microshop_chassis.pagination import Page, Paging
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.testing import ApiClient, RunningApp

NUMBERS = list(range(2500))


@pytest.fixture
async def api(tmp_path):
    router = APIRouter()

    @router.get("/numbers")
    async def numbers(paging: Paging) -> Page[int]:
        return Page(items=NUMBERS[paging.offset:paging.offset + paging.limit], total=len(NUMBERS))

    app = create_app(settings=ServiceSettings(service_name="paging", data_dir=tmp_path), version="1",
                     routers=[router])
    async with RunningApp(app) as running:
        yield ApiClient(running.url)


async def test_defaults_are_limit_100_offset_0(api):
    reply = await api.get("/numbers")
    assert reply.status == 200
    assert reply.body["items"] == NUMBERS[:100]
    assert reply.body["total"] == 2500


async def test_limit_and_offset_are_applied_up_to_1000(api):
    reply = await api.get("/numbers", params={"limit": "1000", "offset": "1200"})
    assert reply.status == 200
    assert reply.body["items"] == NUMBERS[1200:2200]
    assert (await api.get("/numbers", params={"limit": "1", "offset": "0"})).body["items"] == [0]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": "1001"}, "limit"), ({"limit": "0"}, "limit"), ({"offset": "-1"}, "offset"),
     ({"limit": "ten"}, "limit")],
)
async def test_out_of_range_is_422_problem(api, params, field):
    reply = await api.get("/numbers", params=params)
    assert reply.status == 422
    assert reply.headers["Content-Type"].startswith(PROBLEM_JSON)
    assert [e["loc"] for e in reply.body["errors"]] == [["query", field]]

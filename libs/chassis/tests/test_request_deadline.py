"""A deadline received in X-Request-Timeout is raised to a floor: a client must not be able to make
a service's calls to others time out at will (issue 8 item 3)."""

from __future__ import annotations

import time

import pytest
from fastapi import APIRouter
from microshop_chassis.app import create_app
from microshop_chassis.context import MIN_REQUEST_TIMEOUT, deadline_var
from microshop_chassis.middleware import _deadline_from
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.testing import ApiClient, RunningApp


def seconds_left(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


@pytest.mark.parametrize("sent", ["0.03", "0", "-5", "0.999"])
def test_a_deadline_below_the_floor_is_raised_to_it(sent):
    left = seconds_left(_deadline_from({"x-request-timeout": sent}, floor=1.0))
    assert 0.9 < left <= 1.0


def test_a_deadline_above_the_floor_is_kept():
    assert 7.9 < seconds_left(_deadline_from({"x-request-timeout": "8"}, floor=1.0)) <= 8.0


@pytest.mark.parametrize("sent", ["soon", "nan", "inf", "-inf", ""])
def test_no_usable_deadline_is_no_deadline(sent):
    assert _deadline_from({"x-request-timeout": sent}, floor=1.0) is None


def test_the_default_floor_is_one_second():
    assert MIN_REQUEST_TIMEOUT == 1.0
    assert ServiceSettings().min_request_timeout == MIN_REQUEST_TIMEOUT
    assert 0.9 < seconds_left(_deadline_from({"x-request-timeout": "0.03"})) <= 1.0


def test_the_floor_is_a_setting(monkeypatch):
    monkeypatch.setenv("MICROSHOP_MIN_REQUEST_TIMEOUT", "2.5")
    assert ServiceSettings().min_request_timeout == 2.5


@pytest.mark.parametrize(("floor", "sent", "expected"), [(None, "0.03", 1.0), (0.2, "0.03", 0.2), (0.2, "3", 3.0)])
async def test_every_service_applies_its_floor_to_incoming_requests(tmp_path, unique, floor, sent, expected):
    router = APIRouter()

    @router.get("/left")
    async def left() -> dict:
        return {"seconds": seconds_left(deadline_var.get())}

    floor_setting = {} if floor is None else {"min_request_timeout": floor}
    settings = ServiceSettings(service_name=unique, data_dir=tmp_path, **floor_setting)
    async with RunningApp(create_app(settings=settings, version="1", routers=[router])) as running:
        reply = await ApiClient(running.url).get("/left", headers={"X-Request-Timeout": sent})
    assert reply.status == 200
    assert expected - 0.5 < reply.body["seconds"] <= expected

"""The scraper against real chassis apps on free ports, through a targets file: figures reach
``/api/services`` and the services page, a target that asks for a token gets one from a stand-in
for users' ``POST /service-tokens`` (cached), and the targets file is read again each round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from microshop_chassis.app import create_app
from microshop_chassis.auth import JwtVerifier
from microshop_chassis.metrics import ServiceMetrics
from microshop_chassis.provide import provide
from microshop_chassis.settings import ServiceSettings
from microshop_chassis.testing import ApiClient, RunningApp, TokenMint, wait_until

SECRET = "the-shared-service-secret"
INTERVAL = 0.2


def chassis_app(tmp_path: Path, name: str, metrics: ServiceMetrics, **options):
    router = APIRouter()

    @router.post("/orders", status_code=201)
    async def place(fail: bool = False) -> dict:
        if fail:
            raise HTTPException(503, "down")
        return {"ok": True}

    return create_app(settings=ServiceSettings(service_name=name, data_dir=tmp_path), version="1",
                      routers=[router], metrics=metrics, **options)


def users_stand_in(mint: TokenMint, issued: list[str]) -> FastAPI:
    """users' POST /service-tokens: a service token for the holder of the secret."""
    app = FastAPI()

    @app.post("/service-tokens")
    async def service_token(body: dict) -> dict:
        if body.get("secret") != SECRET:
            raise HTTPException(401, "wrong secret")
        issued.append(body["service"])
        return {"access_token": mint.token(f"service:{body['service']}", role="service"), "token_type": "bearer",
                "expires_in": 900}

    return app


def write_targets(path: Path, *processes: tuple[str, str, int]) -> None:
    path.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"],
                                 "labels": {"service": service, "instance": instance, "release": "r1"}}
                                for service, instance, port in processes]))


def service_of(report: dict, name: str) -> dict | None:
    return next((service for service in report["services"] if service["service"] == name), None)


@pytest.fixture
def targets_file(tmp_path) -> Path:
    return tmp_path / "scrape-targets.json"


async def test_every_target_is_scraped_and_a_token_is_fetched_once_for_the_one_that_asks(
        tmp_path, receiver_at, targets_file, monkeypatch):
    mint, issued = TokenMint(), []
    orders_metrics = ServiceMetrics()
    orders_metrics.breaker_state.labels("payments").set(0)
    gateway = chassis_app(tmp_path, "gateway", ServiceMetrics(), operator_metrics=True, messaging_admin=False)
    provide(gateway, JwtVerifier, mint.verifier())
    async with (RunningApp(users_stand_in(mint, issued)) as users,
                RunningApp(chassis_app(tmp_path, "orders", orders_metrics)) as orders,
                RunningApp(gateway) as gateway_running):
        monkeypatch.setenv("MICROSHOP_USERS_URL", users.url)
        monkeypatch.setenv("MICROSHOP_SERVICE_SECRET", SECRET)
        write_targets(targets_file, ("orders", "orders", orders.port), ("gateway", "gateway", gateway_running.port),
                      ("payments", "payments", 9))  # nothing listens on port 9: down
        async with receiver_at(scrape_targets=targets_file, scrape_interval_seconds=INTERVAL) as receiver:
            shop = ApiClient(orders.url)
            for fail in (False, False, False, True):
                await shop.post(f"/orders?fail={str(fail).lower()}")

            async def orders_busy() -> dict | None:
                report = (await receiver.api.get("/api/services")).body
                orders_now = service_of(report, "orders")
                return report if orders_now and (orders_now["current"]["rate"] or 0) > 0 else None

            report = await wait_until(orders_busy, timeout=10, what="orders' request rate")
            orders_now = service_of(report, "orders")
            assert orders_now["current"]["error_pct"] == pytest.approx(25.0)
            assert orders_now["current"]["p99_ms"] > 0
            assert orders_now["breakers"] == [{"target": "payments", "state": "closed"}]
            assert orders_now["series"]["t"] and max(orders_now["series"]["rate"]) > 0
            (replica,) = orders_now["replicas"]
            assert replica["up"] and replica["release"] == "r1" and replica["instance"] == "orders"

            async def gateway_up() -> bool:
                gateway_now = service_of((await receiver.api.get("/api/services")).body, "gateway")
                return gateway_now["replicas"][0]["up"]

            await wait_until(gateway_up, timeout=10, what="the gateway scraped with a token")
            payments = service_of(report, "payments")["replicas"][0]
            assert payments["up"] is False and payments["error"]

            # A few more rounds: the token is cached, not fetched per scrape.
            rounds = report["rounds"]
            await wait_until(lambda: _rounds_beyond(receiver, rounds + 5), timeout=10, what="five more rounds")
            assert issued == ["telemetry"]

            page = await receiver.api.get("/services")
            assert page.status == 200
            for text in ('data-service="orders"', 'data-service="gateway"', 'data-instance="payments"',
                         'data-up="false"', 'data-state="closed"', "uPlot.iife.min.js", "services.js"):
                assert text in page.body, text

            # The launcher rewrites the file when its processes change: the next round follows it.
            write_targets(targets_file, ("orders", "orders", orders.port))

            async def only_orders() -> bool:
                report = (await receiver.api.get("/api/services")).body
                return [service["service"] for service in report["services"]] == ["orders"]

            await wait_until(only_orders, timeout=10, what="the new targets")


async def _rounds_beyond(receiver, count: int) -> bool:
    return (await receiver.api.get("/api/services")).body["rounds"] >= count


async def test_without_a_targets_file_nothing_is_scraped_and_the_page_says_how(receiver):
    report = (await receiver.api.get("/api/services")).body
    assert report["scraping"] is False and report["services"] == []
    page = await receiver.api.get("/services")
    assert page.status == 200 and 'id="not-scraping"' in page.body and "--scrape-targets" in page.body
    bad = await receiver.api.get("/api/services", params={"window_seconds": "0"})
    assert bad.status == 422 and bad.headers["content-type"].startswith("application/problem+json")


async def test_a_targets_file_not_yet_written_means_no_targets_yet(receiver_at, targets_file):
    async with receiver_at(scrape_targets=targets_file, scrape_interval_seconds=INTERVAL) as receiver:
        await wait_until(lambda: _rounds_beyond(receiver, 2), timeout=10, what="two rounds")
        page = await receiver.api.get("/services")
        assert 'id="no-targets"' in page.body

"""/health reports every service; /ready has no checks of its own."""

from microshop_chassis.testing import ApiClient, RunningApp
from microshop_gateway.bootstrap import build
from microshop_gateway.settings import SERVICES, GatewaySettings

from .conftest import OPEN_API


async def test_health_shows_each_service_up_or_down(gateway, settings):
    reply = await ApiClient(gateway.url).get("/health")
    assert reply.status == 200  # the gateway itself is alive either way
    body = reply.body
    assert body["status"] == "degraded" and body["service"] == "gateway" and body["version"] == "0.1.0"
    assert set(body["services"]) == set(SERVICES)
    users = body["services"]["users"]
    assert users["status"] == "ok" and users["version"] == "9.9.9" and users["latency_ms"] >= 0
    assert "error" not in users
    orders = body["services"]["orders"]
    assert orders["status"] == "down" and orders["version"] is None
    assert "Connect" in orders["error"]  # aiohttp's ClientConnectorError: nothing listens there
    assert orders["latency_ms"] < settings.health_timeout * 1000 + 500


async def test_health_is_ok_when_every_service_answers(fake_users, tmp_path):
    all_up = GatewaySettings(**{f"{name}_url": fake_users.url for name in SERVICES}, data_dir=tmp_path)
    async with RunningApp(build(all_up, public_api=OPEN_API).app) as gateway:
        body = (await ApiClient(gateway.url).get("/health")).body
    assert body["status"] == "ok"
    assert {report["status"] for report in body["services"].values()} == {"ok"}


async def test_a_hung_service_is_down_after_the_health_timeout(fake_users, tmp_path):
    fake_users.health_hangs = True
    hung = GatewaySettings(users_url=fake_users.url, health_timeout=0.3, data_dir=tmp_path)
    async with RunningApp(build(hung, public_api=OPEN_API).app) as gateway:
        body = (await ApiClient(gateway.url).get("/health")).body
    users = body["services"]["users"]
    assert users["status"] == "down" and users["error"] == "TimeoutError"
    assert 250 <= users["latency_ms"] < 1000


async def test_ready_has_no_checks_of_its_own(gateway):
    reply = await ApiClient(gateway.url).get("/ready")
    assert reply.status == 200 and reply.body == {"status": "ready", "checks": {}}

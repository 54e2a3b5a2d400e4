"""The broker's users: each service publishes only its own events and subscribes only to what it
consumes; nobody connects without credentials. Against a real nats-server with the launcher's
configuration (testing.NatsServer writes the same one)."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import urllib.request

import nats
import pytest
from microshop_chassis.broker import Broker, ensure_stream, redacted_url
from microshop_chassis.broker_auth import new_passwords, server_config, service_user
from microshop_chassis.consumer import EventConsumer
from microshop_chassis.events import STREAM, Event
from microshop_chassis.private_files import write_private_file
from microshop_chassis.testing import (
    NatsServer,
    free_port,
    nats_server_binary,
    port_open,
    wait_for_sync,
    wait_until,
)


@pytest.fixture
def server(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


async def connect(url: str):
    """A connection that records the server's asynchronous errors (permission violations)."""
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    return nc, errors


async def stream_messages(server: NatsServer, subject: str) -> int:
    nc = await nats.connect(server.url)
    try:
        info = await nc.jetstream().stream_info(STREAM, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)
    finally:
        await nc.close()


async def test_notifications_cannot_forge_an_order_confirmed_and_nothing_reaches_the_stream(server):
    operator = await nats.connect(server.url)
    await ensure_stream(operator.jetstream())
    await operator.close()
    nc, errors = await connect(server.url_for("notifications"))
    try:
        with pytest.raises(nats.errors.TimeoutError):  # the server drops it: no acknowledgement comes
            await nc.jetstream().publish("events.orders.OrderConfirmed", b"{}", timeout=1)
        assert any("permissions violation" in str(error).lower() for error in errors)
    finally:
        await nc.close()
    assert await stream_messages(server, "events.orders.OrderConfirmed") == 0


async def test_a_connection_without_credentials_is_refused(server):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.bare_url, allow_reconnect=False, max_reconnect_attempts=0)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.bare_url.replace("://", "://orders:wrong@"), allow_reconnect=False,
                           max_reconnect_attempts=0)


async def test_a_service_cannot_listen_to_events_it_does_not_consume(server):
    nc, errors = await connect(server.url_for("notifications"))
    try:
        await nc.subscribe("events.payments.>")
        await nc.flush()
        await wait_until(lambda: asyncio.sleep(0, result=errors), timeout=5, what="the subscription refused")
        assert "permissions violation for subscription" in str(errors[0]).lower()
    finally:
        await nc.close()


async def test_each_service_publishes_and_consumes_with_its_own_user(server):
    """orders' relay publishes with orders' user; notifications' consumer gets it with its own."""
    orders = Broker(server.bare_url, "orders", user="orders", password=server.passwords["orders"])
    notifications = Broker(server.bare_url, "notifications", user="notifications",
                           password=server.passwords["notifications"])
    received: list[Event] = []

    async def handle(event: Event) -> None:
        received.append(event)

    consumer = EventConsumer(notifications, durable="notifications", subjects=["events.orders.OrderConfirmed"],
                             handler=handle)
    for broker in (orders, notifications):
        broker.start()
    try:
        js = await orders.wait_connected()
        await notifications.wait_connected()
        consumer.start()
        event = Event(type="OrderConfirmed", source="orders", data={"order_id": "o-1"})
        await js.publish(event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id})
        await wait_until(lambda: asyncio.sleep(0, result=received), timeout=10, what="the event consumed")
        assert received[0].id == event.id
    finally:
        await consumer.stop()
        for broker in (orders, notifications):
            await broker.close()


def test_permissions_name_only_the_services_own_subjects():
    orders, reports = service_user("orders"), service_user("reports")
    assert "events.orders.OrderConfirmed" in orders.publish
    assert not [subject for subject in orders.publish if subject.startswith("events.") and ".orders." not in subject]
    assert not [subject for subject in reports.publish if subject.startswith("events.")]
    assert "events.payments.PaymentCaptured" in reports.subscribe and ">" not in reports.subscribe
    # No service may delete, purge or rewrite a stream.
    for user in (orders, reports):
        assert not [s for s in user.publish if s.startswith("$JS.API.STREAM.") and "INFO" not in s
                    and "CREATE" not in s]
        assert "$JS.API.>" not in user.publish


def test_the_server_configuration_is_private_and_urls_are_shown_without_passwords(server):
    assert stat.S_IMODE(server.config_file.stat().st_mode) == 0o600
    assert redacted_url(server.url) == server.bare_url
    broker = Broker(server.url_for("orders"), "orders")
    assert server.passwords["orders"] not in broker.url


@pytest.mark.parametrize("sync_every_write", [True, False])
def test_jetstream_syncs_every_write_to_disk_before_acknowledging(tmp_path, sync_every_write):
    """What the launcher's configuration does to a real nats-server, read back from its /varz."""
    config = tmp_path / "nats-server.conf"
    write_private_file(config, server_config(new_passwords(), sync_every_write=sync_every_write))
    port, monitor = free_port(), free_port()
    process = subprocess.Popen([nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port),
                                "-m", str(monitor), "-js", "-sd", str(tmp_path / "js")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_sync(lambda: port_open(monitor), 10, "nats-server monitoring")
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as reply:
            jetstream = json.load(reply)["jetstream"]["config"]
        assert jetstream.get("sync_always", False) is sync_every_write
    finally:
        process.terminate()
        process.wait(10)

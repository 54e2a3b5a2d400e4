from contextlib import asynccontextmanager

import nats
import pytest
from microshop_chassis.broker import ensure_stream
from microshop_chassis.events import STREAM, Event
from microshop_chassis.testing import ApiClient, NatsServer, RunningApp, TokenMint, wait_until
from microshop_mail_catcher.app import start as start_mail_catcher
from microshop_notifications.bootstrap import build
from microshop_notifications.consumer import CONSUMER
from microshop_notifications.settings import NotificationsSettings
from nats.js.errors import NotFoundError


@pytest.fixture
def nats_url(tmp_path):
    """A NATS server of this test's own, so the durable consumer and the streams start empty."""
    server = NatsServer(tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
async def mail_catcher():
    running = await start_mail_catcher("127.0.0.1", 0, 0, None)
    yield running
    await running.close()


@pytest.fixture
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture
def settings(database_url, nats_url, mail_catcher, tmp_path) -> NotificationsSettings:
    return NotificationsSettings(
        database_url=database_url, nats_url=nats_url, data_dir=tmp_path,
        smtp_host="127.0.0.1", smtp_port=mail_catcher.smtp_port,
        # A long interval: mail arriving within a test's deadline proves the wake-up after each event.
        delivery_interval_seconds=30, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.2,
    )


@pytest.fixture
def serve(mint):
    """Start the service with ``settings`` over real HTTP; tokens come from ``mint``."""

    @asynccontextmanager
    async def serving(settings: NotificationsSettings):
        async with RunningApp(build(settings, verifier=mint.verifier()).app) as running:
            yield running

    return serving


@pytest.fixture
async def service(serve, settings):
    async with serve(settings) as running:
        yield running


class Harness:
    """Publishes events to JetStream and reads what came out: mail in the catcher, API answers."""

    def __init__(self, js, mail_url: str, mint: TokenMint) -> None:
        self.js = js
        self.mail_url = mail_url
        self.mint = mint

    async def publish(self, event: Event, msg_id: str | None = None) -> int:
        """Publish as a producer's outbox relay would; returns the stream sequence."""
        ack = await self.js.publish(
            event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id or event.id}
        )
        return ack.seq

    async def publish_raw(self, subject: str, payload: bytes) -> int:
        return (await self.js.publish(subject, payload)).seq

    async def consumed(self, seq: int) -> None:
        """Wait until the notifications consumer has acked everything up to stream sequence ``seq``."""

        async def acked() -> bool:
            try:
                info = await self.js.consumer_info(STREAM, CONSUMER)
            except NotFoundError:
                return False
            return info.ack_floor.stream_seq >= seq

        await wait_until(acked, timeout=15, what=f"consumer to ack stream sequence {seq}")

    async def mails(self, **query) -> list[dict]:
        reply = await ApiClient(self.mail_url).get("/api/messages", params=query)
        assert reply.status == 200, reply.body
        return reply.body["items"]

    async def wait_mails(self, count: int = 1, **query) -> list[dict]:
        async def arrived():
            found = await self.mails(**query)
            return found if len(found) >= count else None

        return await wait_until(arrived, timeout=15, what=f"{count} mail(s) matching {query}")


@pytest.fixture
async def harness(nats_url, mail_catcher, mint):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    yield Harness(js, mail_catcher.http_url, mint)
    await nc.close()

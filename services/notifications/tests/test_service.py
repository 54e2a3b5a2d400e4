"""notifications end to end: real NATS JetStream in, real SMTP (the mail catcher) out, real HTTP,
on SQLite and PostgreSQL."""

import json
import uuid
from datetime import datetime

import pytest
from microshop_chassis.events import DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, Event
from microshop_chassis.testing import ApiClient, assert_event_matches_contract, wait_until
from microshop_mail_catcher.app import start as start_mail_catcher

ITEMS = [
    {"sku": "BOOK-1", "quantity": 2, "unit_price_cents": 1250},
    {"sku": "MUG-1", "quantity": 1, "unit_price_cents": 300},
]


def order_event(event_type: str = "OrderConfirmed", *, customer_id: str | None = None, **data) -> Event:
    customer_id = customer_id or str(uuid.uuid4())
    payload = {
        "order_id": str(uuid.uuid4()), "customer_id": customer_id,
        "customer_email": f"{customer_id[:8]}@example.com", "items": ITEMS, "total_cents": 2800,
        "currency": "USD",
    }
    if event_type == "OrderConfirmed":
        payload["payment_id"] = f"pay-{uuid.uuid4().hex[:8]}"
    if event_type == "OrderRejected":
        payload["reason"] = "Out of stock: BOOK-1"
    payload.update(data)
    event = Event(type=event_type, source="orders", data=payload)
    assert_event_matches_contract(json.loads(event.model_dump_json()))  # our test data obeys the contract
    return event


def user_registered(name: str = "Ada") -> Event:
    user_id = str(uuid.uuid4())
    event = Event(type="UserRegistered", source="users",
                  data={"user_id": user_id, "email": f"{user_id[:8]}@example.com", "name": name, "role": "customer"})
    assert_event_matches_contract(json.loads(event.model_dump_json()))
    return event


def order_header(event: Event) -> str:
    return f"X-Order-Id:{event.data['order_id']}"


async def wait_status(api: ApiClient, notification_id: str, status: str, token: str) -> dict:
    async def reached():
        reply = await api.get(f"/notifications/{notification_id}", token=token)
        return reply.body if reply.status == 200 and reply.body["status"] == status else None

    return await wait_until(reached, timeout=15, what=f"notification {notification_id} {status}")


async def test_order_confirmed_mails_the_customer_once_and_the_api_lists_it(service, harness):
    event = order_event("OrderConfirmed")
    customer = harness.mint.token(event.data["customer_id"])
    await harness.publish(event)

    [mail] = await harness.wait_mails(header=order_header(event))
    order_id = event.data["order_id"]
    assert mail["rcpt_to"] == [event.data["customer_email"]]
    assert mail["mail_from"] == "shop@microshop.local"
    assert mail["subject"] == f"Order {order_id[:8]} confirmed"
    notification_id = mail["headers"]["X-Microshop-Notification-Id"]
    assert mail["message_id"] == f"<notification-{notification_id}@microshop.local>"
    assert mail["headers"]["X-Microshop-Event-Type"] == "OrderConfirmed"
    assert "2 x BOOK-1 at 12.50 USD = 25.00 USD" in mail["text"]
    assert "Total: 28.00 USD" in mail["text"]
    assert event.data["payment_id"] in mail["text"]

    api = ApiClient(service.url)
    detail = await wait_status(api, notification_id, "SENT", customer)
    assert detail["recipient"] == event.data["customer_email"] and detail["body"] == mail["text"]
    assert detail["order_id"] == order_id and detail["type"] == "order_confirmed" and detail["sent_at"]
    listed = await api.get("/notifications", token=customer)
    assert listed.status == 200 and listed.body["total"] == 1
    [item] = listed.body["items"]
    assert item["id"] == notification_id and item["subject"] == mail["subject"]
    assert set(item) == {"id", "type", "order_id", "subject", "status", "created_at"}


@pytest.mark.parametrize(
    ("event_type", "subject_end", "body_part"),
    [
        ("OrderRejected", "could not be completed", "Out of stock: BOOK-1"),
        ("OrderCancelled", "cancelled", "The payment of 28.00 USD will be refunded."),
    ],
)
async def test_each_order_outcome_gets_its_own_mail(service, harness, event_type, subject_end, body_part):
    event = order_event(event_type)
    await harness.publish(event)
    [mail] = await harness.wait_mails(header=order_header(event))
    assert mail["subject"] == f"Order {event.data['order_id'][:8]} {subject_end}"
    assert body_part in mail["text"] and "Total: 28.00 USD" in mail["text"]
    assert mail["headers"]["X-Microshop-Event-Type"] == event_type


async def test_registration_gets_a_welcome_mail(service, harness):
    event = user_registered("Ada")
    await harness.publish(event)
    [mail] = await harness.wait_mails(to=event.data["email"])
    assert mail["subject"] == "Welcome to microshop, Ada"
    assert "X-Order-Id" not in mail["headers"]
    assert mail["headers"]["X-Microshop-Event-Type"] == "UserRegistered"
    listed = await ApiClient(service.url).get("/notifications", token=harness.mint.token(event.data["user_id"]))
    assert [(i["type"], i["order_id"]) for i in listed.body["items"]] == [("welcome", None)]


async def test_a_redelivered_event_is_mailed_once(service, harness):
    event = order_event("OrderConfirmed")
    await harness.publish(event, msg_id="first-delivery")
    [mail] = await harness.wait_mails(header=order_header(event))
    # The same event again under another Nats-Msg-Id, so JetStream does not drop it: the inbox must.
    seq = await harness.publish(event, msg_id="second-delivery")
    await harness.consumed(seq)

    admin = harness.mint.token(role="admin")
    api = ApiClient(service.url)
    await wait_status(api, mail["headers"]["X-Microshop-Notification-Id"], "SENT", admin)
    assert len(await harness.mails(header=order_header(event))) == 1
    listed = await api.get("/notifications", token=admin, params={"order_id": event.data["order_id"]})
    assert listed.body["total"] == 1


async def test_an_order_outcome_announced_twice_under_new_event_ids_is_mailed_once(service, harness):
    event = order_event("OrderCancelled")
    again = Event(type=event.type, source=event.source, data=event.data)  # same order, new event id
    await harness.publish(event)
    seq = await harness.publish(again)
    await harness.consumed(seq)

    admin = harness.mint.token(role="admin")
    [mail] = await harness.wait_mails(header=order_header(event))
    await wait_status(ApiClient(service.url), mail["headers"]["X-Microshop-Notification-Id"], "SENT", admin)
    assert len(await harness.mails(header=order_header(event))) == 1


async def test_customers_see_their_own_notifications_and_admins_see_all(service, harness):
    ada, bob = str(uuid.uuid4()), str(uuid.uuid4())
    ada_order, bob_order = order_event(customer_id=ada), order_event(customer_id=bob)
    welcome = user_registered("Ada")
    welcome.data["user_id"] = ada
    for event in (ada_order, bob_order):
        await harness.publish(event)
    await harness.consumed(await harness.publish(welcome))

    api = ApiClient(service.url)
    ada_token, bob_token = harness.mint.token(ada), harness.mint.token(bob)
    admin = harness.mint.token(role="admin")

    mine = await api.get("/notifications", token=ada_token)
    assert mine.body["total"] == 2
    assert {i["type"] for i in mine.body["items"]} == {"welcome", "order_confirmed"}
    bobs = (await api.get("/notifications", token=bob_token)).body
    assert bobs["total"] == 1 and bobs["items"][0]["order_id"] == bob_order.data["order_id"]
    everyone = (await api.get("/notifications", token=admin)).body
    assert everyone["total"] == 3

    # Filters and paging.
    confirmed = (await api.get("/notifications", token=admin, params={"type": "order_confirmed"})).body
    assert confirmed["total"] == 2 and {i["type"] for i in confirmed["items"]} == {"order_confirmed"}
    one_order = (await api.get("/notifications", token=admin, params={"order_id": ada_order.data["order_id"]})).body
    assert [i["order_id"] for i in one_order["items"]] == [ada_order.data["order_id"]]
    pages = [(await api.get("/notifications", token=admin, params={"limit": 1, "offset": n})).body for n in range(3)]
    assert all(p["total"] == 3 and len(p["items"]) == 1 for p in pages)
    assert [p["items"][0]["id"] for p in pages] == [i["id"] for i in everyone["items"]]
    created = [datetime.fromisoformat(i["created_at"]) for i in everyone["items"]]
    assert created == sorted(created, reverse=True)  # newest first

    # Someone else's notification is indistinguishable from a missing one.
    bobs_id = bobs["items"][0]["id"]
    hidden = await api.get(f"/notifications/{bobs_id}", token=ada_token)
    assert hidden.status == 404 and hidden.headers["Content-Type"].startswith("application/problem+json")
    assert hidden.body["type"].endswith("/not-found")
    assert (await api.get(f"/notifications/{uuid.uuid4()}", token=ada_token)).body["detail"].startswith("No notif")
    seen_by_admin = await api.get(f"/notifications/{bobs_id}", token=admin)
    assert seen_by_admin.status == 200 and seen_by_admin.body["recipient"] == bob_order.data["customer_email"]


async def test_bad_requests_are_problems(service, mint):
    api = ApiClient(service.url)
    assert (await api.get("/notifications")).status == 401
    assert (await api.get("/notifications", token="not.a.jwt")).status == 401
    token = mint.token()
    for params in ({"type": "postcard"}, {"limit": 0}, {"limit": 1001}, {"offset": -1}):
        reply = await api.get("/notifications", token=token, params=params)
        assert reply.status == 422, params
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert reply.body["type"].endswith("/validation-error")


async def test_smtp_down_events_still_consumed_and_mail_sent_once_it_is_back(serve, settings, harness, mail_catcher):
    smtp_port = mail_catcher.smtp_port
    await mail_catcher.close()  # nothing listens on the SMTP port now
    settings = settings.model_copy(update={"delivery_interval_seconds": 0.1})
    async with serve(settings) as service:
        api = ApiClient(service.url)
        admin = harness.mint.token(role="admin")
        event = order_event("OrderConfirmed")
        await harness.consumed(await harness.publish(event))  # consumption does not wait for SMTP

        async def retried():
            page = (await api.get("/notifications", token=admin)).body
            if page["total"] != 1:
                return None
            detail = (await api.get(f"/notifications/{page['items'][0]['id']}", token=admin)).body
            return detail if detail["attempts"] >= 2 else None

        pending = await wait_until(retried, timeout=15, what="failed delivery attempts")
        assert pending["status"] == "PENDING" and pending["sent_at"] is None
        assert pending["last_error"]  # admins see why
        customer = harness.mint.token(event.data["customer_id"])
        customer_view = await api.get(f"/notifications/{pending['id']}", token=customer)
        assert customer_view.body["status"] == "PENDING" and customer_view.body["last_error"] is None
        assert (await api.get("/health")).body["pending_deliveries"] == 1

        catcher = await start_mail_catcher("127.0.0.1", smtp_port, 0, None)
        try:
            harness.mail_url = catcher.http_url
            [mail] = await harness.wait_mails(header=order_header(event))
            assert mail["headers"]["X-Microshop-Notification-Id"] == pending["id"]
            sent = await wait_status(api, pending["id"], "SENT", admin)
            assert sent["attempts"] >= pending["attempts"]  # failures are history, not reset
            assert len(await harness.mails()) == 1
            assert (await api.get("/health")).body["pending_deliveries"] == 0
        finally:
            await catcher.close()


async def test_unparseable_message_goes_to_the_dead_letter_stream(service, harness):
    dead = await harness.js.subscribe(f"{DEAD_LETTER_PREFIX}.notifications", stream=DEAD_LETTER_STREAM,
                                      ordered_consumer=True)
    await harness.publish_raw("events.orders.OrderConfirmed", b"{this is not an event")
    message = await dead.next_msg(timeout=15)
    assert message.data == b"{this is not an event"
    assert message.headers["Microshop-Original-Subject"] == "events.orders.OrderConfirmed"
    assert message.headers["Microshop-Dead-Letter-Reason"].startswith("unparseable event")

    # The poison message does not block the stream: the next event is mailed.
    event = order_event("OrderConfirmed")
    await harness.publish(event)
    assert len(await harness.wait_mails(header=order_header(event))) == 1


async def test_event_breaking_its_contract_is_dead_lettered_at_once(service, harness):
    dead = await harness.js.subscribe(f"{DEAD_LETTER_PREFIX}.notifications", stream=DEAD_LETTER_STREAM,
                                      ordered_consumer=True)
    broken = Event(type="OrderConfirmed", source="orders",
                   data={"order_id": str(uuid.uuid4()), "customer_id": "c-1", "items": ITEMS, "total_cents": 2800,
                         "currency": "USD", "payment_id": "p-1"})  # no customer_email
    seq = await harness.publish(broken)
    message = await dead.next_msg(timeout=15)
    assert json.loads(message.data)["id"] == broken.id
    assert "customer_email" in message.headers["Microshop-Dead-Letter-Reason"]
    await harness.consumed(seq)
    listed = await ApiClient(service.url).get("/notifications", token=harness.mint.token(role="admin"))
    assert listed.body["total"] == 0


async def test_ready_health_and_openapi(service, settings):
    api = ApiClient(service.url)

    async def is_ready():
        reply = await api.get("/ready")
        if reply.status != 200:  # the broker connects in the background after start-up
            assert reply.status == 503 and reply.body["type"].endswith("/not-ready")
            return None
        return reply

    ready = await wait_until(is_ready, timeout=15, what="readiness")
    assert ready.body["checks"] == {"database": "ok", "broker": "ok"}
    health = (await api.get("/health")).body
    assert health["service"] == "notifications" and health["pending_deliveries"] == 0
    spec = (await api.get("/openapi.json")).body
    listing = spec["paths"]["/notifications"]["get"]
    assert listing["summary"] and "200" in listing["responses"]
    assert {p["name"] for p in listing["parameters"]} >= {"limit", "offset", "type", "order_id"}
    assert spec["paths"]["/notifications/{notification_id}"]["get"]["summary"]


# Replicas share a database on PostgreSQL; SQLite serves one process per service (see the chassis).
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_replicas_sharing_a_database_send_each_mail_once(serve, settings, harness):
    # Both replicas share the durable consumer and race for the same PENDING rows every 50 ms.
    settings = settings.model_copy(update={"delivery_interval_seconds": 0.05})
    async with serve(settings) as first, serve(settings) as _second:
        events = [order_event("OrderConfirmed") for _ in range(20)]
        for event in events:
            await harness.publish(event)
        mails = await harness.wait_mails(len(events), limit=1000)
        api = ApiClient(first.url)

        async def all_sent():
            return (await api.get("/health")).body["pending_deliveries"] == 0

        await wait_until(all_sent, timeout=15, what="every notification SENT")
        mails = await harness.mails(limit=1000)
        assert sorted(m["headers"]["X-Order-Id"] for m in mails) == sorted(e.data["order_id"] for e in events)

"""Event fields end up in mail headers (issue 8 item 11): NUL, escape sequences, bidi overrides
and line breaks in a name must not reach the Subject, through a real event and a real SMTP server."""

import json
import unicodedata
import uuid

from microshop_chassis.events import Event
from microshop_chassis.testing import ApiClient, assert_event_matches_contract

HOSTILE_NAME = "Ada\x00\x1b[31m\u202e\x7f\u0085 Lovelace\r\nBcc: victim@example.com"


async def test_control_characters_in_a_name_never_reach_the_subject(service, harness):
    user_id = str(uuid.uuid4())
    event = Event(type="UserRegistered", source="users",
                  data={"user_id": user_id, "email": f"{user_id[:8]}@example.com", "name": HOSTILE_NAME,
                        "role": "customer"})
    assert_event_matches_contract(json.loads(event.model_dump_json()))
    await harness.publish(event)

    [mail] = await harness.wait_mails(to=event.data["email"])
    assert mail["subject"] == "Welcome to microshop, Ada [31m Lovelace Bcc: victim@example.com"
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in mail["subject"])
    assert "Bcc" not in mail["headers"] and mail["rcpt_to"] == [event.data["email"]]
    listed = await ApiClient(service.url).get("/notifications", token=harness.mint.token(user_id))
    assert [item["subject"] for item in listed.body["items"]] == [mail["subject"]]

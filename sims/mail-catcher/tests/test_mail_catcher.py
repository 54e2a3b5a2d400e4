"""Mail catcher over real sockets: SMTP in with aiosmtplib, HTTP out with aiohttp.

Every server binds port 0. A returned SMTP send means the mail is stored
(the handler stores before it answers 250), so no test waits or polls.
"""

import asyncio
import os
import re
import signal
import sys
from datetime import UTC, datetime
from email.message import EmailMessage

import aiohttp
import aiosmtplib
import pytest
import pytest_asyncio
from microshop_mail_catcher.__main__ import parse_args
from microshop_mail_catcher.app import Running, start


@pytest_asyncio.fixture
async def catcher():
    running = await start("127.0.0.1", 0, 0, None)
    yield running
    await running.close()


@pytest_asyncio.fixture
async def http(catcher: Running):
    async with aiohttp.ClientSession(base_url=catcher.http_url) as session:
        yield session


def make_mail(
    to: str = "alice@example.com",
    subject: str = "Order confirmed",
    body: str = "Thanks for your order.\n",
    **headers: str,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "shop@microshop.test"
    msg["To"] = to
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


async def send(catcher: Running, msg: EmailMessage, **kwargs) -> None:
    await aiosmtplib.send(msg, hostname=catcher.host, port=catcher.smtp_port, **kwargs)


async def list_messages(http: aiohttp.ClientSession, **params: str) -> dict:
    async with http.get("/api/messages", params=params) as resp:
        assert resp.status == 200
        return await resp.json()


@pytest.mark.asyncio
async def test_health(http):
    async with http.get("/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "status": "ok",
            "service": "mail-catcher",
            "version": "0.1.0",
        }


@pytest.mark.asyncio
async def test_sent_mail_is_readable_over_http(catcher, http):
    msg = make_mail(X_Order_Id="ord-42", Message_ID="<abc.123@microshop.test>")
    await send(catcher, msg)

    page = await list_messages(http)
    assert page["total"] == 1
    [item] = page["items"]
    assert item["mail_from"] == "shop@microshop.test"
    assert item["rcpt_to"] == ["alice@example.com"]
    assert item["subject"] == "Order confirmed"
    assert item["text"] == "Thanks for your order.\n"
    assert item["message_id"] == "<abc.123@microshop.test>"
    assert item["headers"]["X-Order-Id"] == "ord-42"
    received = datetime.fromisoformat(item["received_at"])
    assert received.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - received).total_seconds()) < 60

    async with http.get(f"/api/messages/{item['id']}") as resp:
        assert resp.status == 200
        assert await resp.json() == item


@pytest.mark.asyncio
async def test_message_id_is_none_when_header_missing(catcher, http):
    await send(catcher, make_mail())
    [item] = (await list_messages(http))["items"]
    assert item["message_id"] is None


@pytest.mark.asyncio
async def test_multipart_takes_the_text_plain_part(catcher, http):
    msg = make_mail(body="Plain body ünïcode.\n")
    msg.add_alternative("<p>HTML body</p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf")
    await send(catcher, msg)

    [item] = (await list_messages(http))["items"]
    assert item["text"] == "Plain body ünïcode.\n"
    assert item["headers"]["Content-Type"].startswith("multipart/mixed")


@pytest.mark.asyncio
async def test_html_only_mail_has_no_text(catcher, http):
    msg = make_mail()
    msg.set_content("<p>only html</p>", subtype="html")
    await send(catcher, msg)
    [item] = (await list_messages(http))["items"]
    assert item["text"] is None


@pytest.mark.asyncio
async def test_filter_by_recipient_case_insensitive(catcher, http):
    await send(catcher, make_mail(to="alice@example.com", subject="one"))
    await send(catcher, make_mail(to="bob@example.com", subject="two"))
    # Bcc: only in the envelope, never in a header.
    await send(
        catcher,
        make_mail(to="alice@example.com", subject="three"),
        recipients=["alice@example.com", "carol@example.com"],
    )

    alice = await list_messages(http, to="ALICE@Example.com")
    assert [m["subject"] for m in alice["items"]] == ["one", "three"]
    assert alice["total"] == 2
    carol = await list_messages(http, to="carol@example.com")
    assert [m["subject"] for m in carol["items"]] == ["three"]
    assert (await list_messages(http, to="nobody@example.com"))["total"] == 0


@pytest.mark.asyncio
async def test_filter_by_header(catcher, http):
    await send(catcher, make_mail(subject="a", X_Order_Id="ord-1"))
    await send(catcher, make_mail(subject="b", X_Order_Id="ord-2"))
    await send(catcher, make_mail(subject="c", X_Order_Id="ord-1", X_Kind="refund"))

    by_order = await list_messages(http, header="x-order-id:ord-1")
    assert [m["subject"] for m in by_order["items"]] == ["a", "c"]
    assert by_order["total"] == 2
    # Repeated header filters must all match.
    params = [("header", "X-Order-Id:ord-1"), ("header", "X-Kind: refund")]
    async with http.get("/api/messages", params=params) as resp:
        assert [m["subject"] for m in (await resp.json())["items"]] == ["c"]
    # Values match exactly, not as a prefix.
    assert (await list_messages(http, header="X-Order-Id:ord"))["total"] == 0


@pytest.mark.asyncio
async def test_newest_last_with_limit_and_offset(catcher, http):
    for n in range(5):
        await send(catcher, make_mail(subject=f"m{n}"))
    page = await list_messages(http, limit="2", offset="1")
    assert [m["subject"] for m in page["items"]] == ["m1", "m2"]
    assert page["total"] == 5
    ids = [m["id"] for m in (await list_messages(http))["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 5


@pytest.mark.parametrize("params", [{"limit": "x"}, {"limit": "-1"}, {"offset": "-5"}, {"header": "nocolon"}])
@pytest.mark.asyncio
async def test_bad_query_is_400_problem(http, params):
    async with http.get("/api/messages", params=params) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["status"] == 400


@pytest.mark.asyncio
async def test_unknown_message_is_404_problem(http):
    async with http.get("/api/messages/999") as resp:
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"
        body = await resp.json()
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"
    assert body["status"] == 404
    assert "999" in body["detail"]

    async with http.get("/no/such/route") as resp:
        assert resp.status == 404
        assert resp.content_type == "application/problem+json"


@pytest.mark.asyncio
async def test_raw_message_is_served(catcher, http):
    await send(catcher, make_mail(X_Order_Id="ord-raw"))
    [item] = (await list_messages(http))["items"]
    async with http.get(f"/api/messages/{item['id']}/raw") as resp:
        assert resp.status == 200
        assert resp.content_type == "message/rfc822"
        assert b"X-Order-Id: ord-raw" in await resp.read()


@pytest.mark.asyncio
async def test_delete_clears_all(catcher, http):
    await send(catcher, make_mail())
    [old] = (await list_messages(http))["items"]

    async with http.delete("/api/messages") as resp:
        assert resp.status == 204
    assert await list_messages(http) == {"items": [], "total": 0}
    async with http.get(f"/api/messages/{old['id']}") as resp:
        assert resp.status == 404

    # Ids are not reused, so a stale id never names a newer message.
    await send(catcher, make_mail())
    [new] = (await list_messages(http))["items"]
    assert new["id"] > old["id"]


@pytest.mark.asyncio
async def test_mail_survives_restart_on_same_db(tmp_path):
    db = str(tmp_path / "mail.db")
    first = await start("127.0.0.1", 0, 0, db)
    try:
        await send(first, make_mail(subject="before restart", X_Order_Id="ord-7"))
    finally:
        await first.close()

    second = await start("127.0.0.1", 0, 0, db)
    try:
        await send(second, make_mail(subject="after restart"))
        async with aiohttp.ClientSession(base_url=second.http_url) as http:
            page = await list_messages(http)
    finally:
        await second.close()
    assert [m["subject"] for m in page["items"]] == ["before restart", "after restart"]
    assert page["items"][0]["headers"]["X-Order-Id"] == "ord-7"
    assert page["items"][1]["id"] > page["items"][0]["id"]


@pytest.mark.asyncio
async def test_html_page_lists_newest_first_and_escapes(catcher, http):
    await send(catcher, make_mail(subject="older mail"))
    await send(catcher, make_mail(subject="<script>alert('x')</script>"))
    async with http.get("/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.index("&lt;script&gt;") < page.index("older mail")


@pytest.mark.asyncio
async def test_close_drops_idle_smtp_client():
    running = await start("127.0.0.1", 0, 0, None)
    client = aiosmtplib.SMTP(hostname=running.host, port=running.smtp_port)
    await client.connect()
    await client.ehlo()
    # Must not hang on the open session; the timeout only turns a hang into a failure.
    await asyncio.wait_for(running.close(), timeout=5)
    with pytest.raises(aiosmtplib.SMTPException):
        await client.noop()


@pytest.mark.asyncio
async def test_start_fails_cleanly_when_http_port_taken(catcher):
    with pytest.raises(OSError):
        await start("127.0.0.1", 0, catcher.http_port, None)


def test_options_come_from_env_and_args(monkeypatch):
    monkeypatch.setenv("MICROSHOP_MAIL_CATCHER_HOST", "0.0.0.0")
    monkeypatch.setenv("MICROSHOP_MAIL_CATCHER_SMTP_PORT", "2525")
    monkeypatch.setenv("MICROSHOP_MAIL_CATCHER_DB", "/tmp/x.db")
    args = parse_args(["--http-port", "9025"])
    assert (args.host, args.smtp_port, args.http_port, args.db) == (
        "0.0.0.0",
        2525,
        9025,
        "/tmp/x.db",
    )
    monkeypatch.delenv("MICROSHOP_MAIL_CATCHER_DB")
    assert parse_args([]).db is None


@pytest.mark.asyncio
async def test_module_runs_as_a_process_and_stops_on_sigterm():
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "microshop_mail_catcher",
        "--smtp-port=0",
        "--http-port=0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ready = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        found = re.search(r"smtp=[\d.]+:(\d+) http=(\S+)", ready)
        assert found, ready
        smtp_port, http_url = int(found[1]), found[2]
        await aiosmtplib.send(make_mail(), hostname="127.0.0.1", port=smtp_port)
        logged = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert "caught #1 from=shop@microshop.test to=alice@example.com" in logged
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{http_url}/health") as resp,
        ):
            assert resp.status == 200
        logged = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert '"GET /health HTTP/1.1" 200' in logged
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


def _read_with_the_default_policy(raw: bytes) -> dict:
    """What parse_message returned when it parsed everything with email.policy.default."""
    import email
    import email.policy

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    headers: dict[str, str] = {}
    for name, value in msg.items():
        if name.lower().startswith("x-") or name.lower() in {"from", "to", "cc", "reply-to", "date", "message-id",
                                                              "content-type"}:
            headers.setdefault(name, str(value))
    part = msg.get_body(preferencelist=("plain",))
    try:
        text = None if part is None else part.get_content()
    except LookupError:
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    message_id, subject = msg.get("Message-ID"), msg.get("Subject")
    return {"message_id": None if message_id is None else str(message_id).strip(),
            "subject": None if subject is None else str(subject),
            "text": None if text is None else text.replace("\r\n", "\n"), "headers": headers}


def _mails() -> dict[str, bytes]:
    from aiosmtplib.email import flatten_message

    utf8 = make_mail(to='"Zoë Ünal" <zoe@example.com>', subject="Ihre Bestellung über 3 × Tasse – bestätigt",
                     body="Grüße, Zoë!\n" + "ä" * 200 + "\n", X_Order_Id="ord-ß", Message_ID="<m.1@x.test>")
    utf8.replace_header("From", '"Boutique Été" <shop@microshop.test>')
    alternative = make_mail(subject="a " * 60, X_Long=" ".join(["word"] * 40))
    alternative.add_alternative("<p>Hi</p>", subtype="html")
    alternative.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="invoice.pdf")
    attached_text = make_mail()
    attached_text.make_mixed()
    attached_text.add_attachment("not the body", filename="notes.txt")
    html_only = EmailMessage()
    html_only["Subject"] = "html"
    html_only.set_content("<b>hi</b>", subtype="html")
    raw_8bit = (b"From: shop@microshop.test\r\nTo: a@example.com\r\nSubject: caf\xc3\xa9 8-bit\r\n"
                b"X-Raw: \xff\xfe\r\nMessage-ID: <dup-1@x>\r\nmessage-id: <dup-2@x>\r\n"
                b"Content-Type: text/plain; charset=x-unknown\r\n\r\nbody \xe9\r\n")
    return {"utf8 7bit": flatten_message(utf8, cte_type="7bit"), "utf8 8bit": flatten_message(utf8),
            "utf8 smtputf8": flatten_message(utf8, utf8=True), "alternative": flatten_message(alternative),
            "attached text": flatten_message(attached_text), "html only": flatten_message(html_only),
            "8-bit headers, unknown charset": raw_8bit, "no headers": b"just a body\r\n"}


@pytest.mark.parametrize("kind", list(_mails()))
def test_parsing_reads_what_the_default_email_policy_reads(kind):
    """compat32 plus decoding the kept headers only: cheaper, and not one field different (the
    fast path itself, not the fallback parse_message keeps for what compat32 cannot walk)."""
    import email
    import email.policy

    from microshop_mail_catcher.app import _fields, _Parsed, parse_message

    raw = _mails()[kind]
    fast = _fields(email.message_from_bytes(raw, _class=_Parsed, policy=email.policy.compat32))
    assert fast == parse_message(raw) == _read_with_the_default_policy(raw)


def test_a_stored_message_costs_no_fsync(tmp_path):
    """WAL with synchronous=NORMAL: a commit survives the process being killed, and the event
    loop does not wait for the disk on every message (FULL fsynced each one)."""
    from microshop_mail_catcher.store import MailStore

    store = MailStore(str(tmp_path / "mail.db"))
    try:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        store.close()

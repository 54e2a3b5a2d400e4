"""SMTP sink and HTTP API of the mail catcher, sharing one asyncio loop."""

import asyncio
import contextlib
import email
import email.message
import email.policy
import functools
import html
import logging
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.contentmanager import raw_data_manager
from email.headerregistry import HeaderRegistry
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from microshop_mail_catcher import __version__
from microshop_mail_catcher.store import MailStore

log = logging.getLogger("microshop.mail_catcher")

# Besides every X-* header, keep the ones a test or a human is likely to check.
_KEPT_HEADERS = {"from", "to", "cc", "reply-to", "date", "message-id", "content-type"}
MAX_LIMIT = 1000
STORE: web.AppKey[MailStore] = web.AppKey("store", MailStore)


# --- SMTP -------------------------------------------------------------------


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard registry builds a new header class on every lookup; one per name is enough."""

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one registry for the process: nothing leaks
    def __getitem__(self, name: str) -> type:
        return super().__getitem__(name)


# email.policy.default's header values, at a fraction of the cost.
_HEADERS = email.policy.default.clone(header_factory=_CachedHeaderRegistry())


class _Parsed(email.message.EmailMessage):
    """Parsed with compat32: headers stay raw strings, ~20x cheaper than email.policy.default,
    which builds an object per header; ``_decoded`` decodes the few kept with ``_HEADERS``,
    exactly as email.policy.default does."""

    def is_attachment(self) -> bool:  # EmailMessage's reads a header object's attribute
        return self.get_content_disposition() == "attachment"


def parse_message(raw: bytes) -> dict[str, Any]:
    """Extract the stored fields from a raw RFC 5322 message."""
    try:
        return _fields(email.message_from_bytes(raw, _class=_Parsed, policy=email.policy.compat32))
    except Exception:  # noqa: BLE001 - what compat32 cannot walk (8-bit bytes in a part's headers)
        return _fields(email.message_from_bytes(raw, policy=email.policy.default))


def _fields(msg: email.message.EmailMessage) -> dict[str, Any]:
    headers: dict[str, str] = {}
    first: dict[str, str] = {}  # the first of each name, case aside, as Message.get finds it
    for name, value in msg.raw_items():
        lower = name.lower()
        if (lower.startswith("x-") or lower in _KEPT_HEADERS) and name not in headers:
            headers[name] = _decoded(name, value)
        if lower in ("message-id", "subject") and lower not in first:
            first[lower] = _decoded(name, value)
    message_id = first.get("message-id")
    return {
        "message_id": None if message_id is None else message_id.strip(),
        "subject": first.get("subject"),
        "text": _plain_text(msg),
        "headers": headers,
    }


def _decoded(name: str, raw_value: str) -> str:
    return str(_HEADERS.header_fetch_parse(name, raw_value))


def _plain_text(msg: email.message.EmailMessage) -> str | None:
    part = msg.get_body(preferencelist=("plain",))
    if part is None:
        return None
    try:
        text = raw_data_manager.get_content(part)  # what get_content() does under email.policy.default
    except LookupError:
        # Unknown charset: a catcher must keep the mail, so show what it can.
        text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    # SMTP puts CRLF on the wire; give back the line endings the sender wrote.
    return text.replace("\r\n", "\n")


class _CatchAll:
    """aiosmtpd handler: accepts every recipient and never relays."""

    def __init__(self, store: MailStore) -> None:
        self._store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from or ""  # "" is the null sender, MAIL FROM:<>
        rcpt_to = list(envelope.rcpt_tos)
        fields = parse_message(raw)
        # Stored before answering 250: once a client's send returns, the
        # message is readable over HTTP, so tests need no polling.
        msg_id = self._store.add(
            mail_from=mail_from,
            rcpt_to=rcpt_to,
            received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            raw=raw,
            **fields,
        )
        log.info(
            "caught #%d from=%s to=%s subject=%r",
            msg_id,
            mail_from,
            ",".join(rcpt_to),
            fields["subject"],
        )
        return "250 Message accepted for delivery"


# --- HTTP -------------------------------------------------------------------


def problem(status: int, detail: str, **headers: str) -> web.Response:
    """RFC 9457 problem details; ``about:blank`` means the title is the HTTP phrase."""
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return web.json_response(body, status=status, content_type="application/problem+json", headers=headers)


@web.middleware
async def _problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    # Turns the router's own 404/405 into problem+json like every other error.
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return problem(exc.status, f"{request.method} {request.path}: {exc.reason}", **extra)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "mail-catcher", "version": __version__})


class _BadRequest(Exception):
    pass


def _int_param(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= high:
        raise _BadRequest(f"'{name}' must be an integer from 0 to {high}, got {raw!r}")
    return value


async def list_messages(request: web.Request) -> web.Response:
    try:
        limit = _int_param(request, "limit", 100, MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 2**62)
        header_filters = []
        for spec in request.query.getall("header", []):
            name, sep, value = spec.partition(":")
            if not sep or not name.strip():
                raise _BadRequest(f"'header' must look like Name:value, got {spec!r}")
            header_filters.append((name.strip(), value.strip()))
    except _BadRequest as exc:
        return problem(400, str(exc))
    items, total = request.app[STORE].find(
        to=request.query.get("to") or None,
        headers=header_filters,
        limit=limit,
        offset=offset,
    )
    return web.json_response({"items": items, "total": total})


async def get_message(request: web.Request) -> web.Response:
    message_id = int(request.match_info["id"])
    item = request.app[STORE].get(message_id)
    if item is None:
        return problem(404, f"No message with id {message_id}")
    return web.json_response(item)


async def get_raw_message(request: web.Request) -> web.Response:
    message_id = int(request.match_info["id"])
    raw = request.app[STORE].raw(message_id)
    if raw is None:
        return problem(404, f"No message with id {message_id}")
    return web.Response(body=raw, content_type="message/rfc822")


async def delete_messages(request: web.Request) -> web.Response:
    request.app[STORE].clear()
    return web.Response(status=204)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Mail catcher</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;
text-align:left;vertical-align:top}}pre{{white-space:pre-wrap}}</style></head>
<body><h1>Mail catcher</h1>
<p>{shown} of {total} message(s), newest first. JSON: <a href="/api/messages">/api/messages</a></p>
<table><tr><th>#</th><th>Received (UTC)</th><th>To</th><th>Subject</th></tr>
{rows}</table></body></html>
"""

_ROW = (
    '<tr><td><a href="/api/messages/{id}">{id}</a></td><td>{received_at}</td>'
    "<td>{to}</td><td><details><summary>{subject}</summary>"
    "<pre>{text}</pre></details></td></tr>"
)


async def index(request: web.Request) -> web.Response:
    items, total = request.app[STORE].find(limit=MAX_LIMIT, newest_first=True)
    rows = "\n".join(
        _ROW.format(
            id=m["id"],
            received_at=html.escape(m["received_at"]),
            to=html.escape(", ".join(m["rcpt_to"])),
            subject=html.escape(m["subject"] or "(no subject)"),
            text=html.escape(m["text"] or "(no text/plain part)"),
        )
        for m in items
    )
    page = _PAGE.format(shown=len(items), total=total, rows=rows)
    return web.Response(text=page, content_type="text/html")


def make_app(store: MailStore) -> web.Application:
    app = web.Application(middlewares=[_problem_middleware])
    app[STORE] = store
    app.router.add_get("/", index)
    app.router.add_get("/health", health)
    app.router.add_get("/api/messages", list_messages)
    app.router.add_delete("/api/messages", delete_messages)
    app.router.add_get(r"/api/messages/{id:\d+}", get_message)
    app.router.add_get(r"/api/messages/{id:\d+}/raw", get_raw_message)
    return app


# --- Both together ----------------------------------------------------------


@dataclass
class Running:
    """A started mail catcher; ports are the bound ones, even when 0 was asked."""

    host: str
    smtp_port: int
    http_port: int
    store: MailStore
    _cleanup: contextlib.AsyncExitStack = field(repr=False)

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literal
        return f"http://{host}:{self.http_port}"

    async def close(self) -> None:
        await self._cleanup.aclose()


async def _close_smtp(server: asyncio.Server, sessions: "weakref.WeakSet[SMTP]") -> None:
    server.close()
    # Drop open SMTP sessions, or an idle client would keep wait_closed()
    # hanging (Python 3.12+ waits for connections).
    for session in list(sessions):
        if session.transport is not None:
            session.transport.close()
    await server.wait_closed()


async def start(
    host: str = "127.0.0.1",
    smtp_port: int = 1025,
    http_port: int = 8025,
    db_path: str | None = None,
) -> Running:
    """Start SMTP and HTTP on the running loop; port 0 picks a free port."""
    loop = asyncio.get_running_loop()
    # Each step registers its undo here, so a failure part-way (say, the HTTP
    # port is taken) releases what was already opened.
    cleanup = contextlib.AsyncExitStack()
    try:
        store = MailStore(db_path)
        cleanup.callback(store.close)

        handler = _CatchAll(store)
        sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

        def smtp_session() -> SMTP:
            # An explicit hostname avoids aiosmtpd's getfqdn(), a DNS lookup.
            smtp = SMTP(handler, hostname="mail-catcher", enable_SMTPUTF8=True, loop=loop)
            sessions.add(smtp)
            return smtp

        smtp_server = await loop.create_server(smtp_session, host, smtp_port)
        cleanup.push_async_callback(_close_smtp, smtp_server, sessions)

        runner = web.AppRunner(make_app(store), access_log_format='%a "%r" %s %b %Tfs')
        await runner.setup()
        cleanup.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, host, http_port).start()
    except BaseException:
        await cleanup.aclose()
        raise
    return Running(
        host=host,
        smtp_port=smtp_server.sockets[0].getsockname()[1],
        http_port=runner.addresses[0][1],
        store=store,
        _cleanup=cleanup,
    )

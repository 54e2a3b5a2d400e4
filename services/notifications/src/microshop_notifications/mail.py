"""Handing mail to the outside world: the ``MailSender`` port the delivery worker uses, and its
SMTP implementation (aiosmtplib). The fast tests put an in-memory sender in its place.

A sender hands out one connection per batch. Sending a message either succeeds, fails for that
message only (``MessageRefused``: the connection is still good), or fails for the connection
(the chassis' ``ServiceUnavailable``: the server cannot be reached, timed out, or hung up).

The SMTP sender keeps a good connection open for a few seconds after its batch, for the next
one: at one mail per order, opening a connection (TCP, greeting, EHLO, and QUIT at the end) cost
both sides more than the message (docs/performance.md, "Prebuilt statements" and after).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
from microshop_chassis.downstream import ServiceUnavailable
from opentelemetry import trace

from .domain import MessageRefused

TARGET = "smtp"

# Failures that concern one message, not the connection. ValueError/TypeError come from encoding
# the message (a header the email package refuses to encode).
_THIS_MESSAGE_ONLY = (
    aiosmtplib.SMTPResponseException,
    aiosmtplib.SMTPRecipientsRefused,
    aiosmtplib.SMTPNotSupported,
    ValueError,
    TypeError,
)


class MailConnection(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand one message to the server: MessageRefused or ServiceUnavailable when it did not
        take it."""


class MailSender(Protocol):
    def connect(self) -> AbstractAsyncContextManager[MailConnection]:
        """A connection for a batch of messages, closed on exit; ServiceUnavailable when the
        server cannot be reached."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class SmtpSender:
    def __init__(self, host: str, port: int, *, timeout: float, tracer: trace.Tracer | None = None,
                 keep_alive: float = 5.0) -> None:
        """``timeout`` bounds connecting, and sending one message, in seconds. ``tracer``: a client
        span per batch of messages (the console's map draws the edge to the SMTP server from it).
        Delivery runs apart from the events that asked for the messages, so the span starts a
        trace of its own: one per batch, not per message. ``keep_alive``: seconds a connection
        stays open after its batch for the next one (0: closed after each batch); well under the
        idle timeout of SMTP servers (minutes), so a kept connection is rarely found closed."""
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tracer = tracer
        self.keep_alive = keep_alive
        self._local_hostname: str | None = None
        self._kept: aiosmtplib.SMTP | None = None
        self._closing_kept: asyncio.TimerHandle | None = None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[MailConnection]:
        if self.tracer is None:
            async with self._connect() as connection:
                yield connection
            return
        attributes = {"server.address": TARGET, "server.port": self.port, "network.protocol.name": "smtp"}
        with self.tracer.start_as_current_span("SMTP deliver", kind=trace.SpanKind.CLIENT, attributes=attributes,
                                               record_exception=False, set_status_on_exception=False) as span:
            connection: _SmtpConnection | None = None
            try:
                async with self._connect() as connection:
                    yield connection
            except Exception as exc:  # its type only: an SMTP answer may quote an address
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                raise
            finally:
                span.set_attribute("microshop.mail.messages", connection.sent if connection is not None else 0)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[_SmtpConnection]:
        smtp = self._take_kept() or await self._open()
        try:
            yield _SmtpConnection(smtp, self.timeout)
        except BaseException:
            smtp.close()  # the connection may be what failed: never reused
            raise
        if self.keep_alive > 0 and smtp.is_connected and self._kept is None:
            self._kept = smtp
            self._closing_kept = asyncio.get_running_loop().call_later(self.keep_alive, self._drop_kept)
        else:
            await _quit(smtp)

    async def _open(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            # getfqdn() may do a DNS lookup: once, off the event loop, not per connection.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.timeout,
                               local_hostname=self._local_hostname)
        try:
            await smtp.connect()
        except Exception as exc:  # refused, unreachable, timed out, bad greeting: all wait and retry
            raise ServiceUnavailable(TARGET, describe(exc)) from exc
        return smtp

    @property
    def holds_connection(self) -> bool:
        """Whether a connection is kept open for the next batch (and still open)."""
        return self._kept is not None and self._kept.is_connected

    def _take_kept(self) -> aiosmtplib.SMTP | None:
        """The kept connection, if the server has not closed it meanwhile (the socket tells, no
        round trip needed). Should it die between this check and the send, the batch fails like
        any lost connection and its messages wait for the next round: nothing is lost."""
        smtp, self._kept = self._kept, None
        if self._closing_kept is not None:
            self._closing_kept.cancel()
            self._closing_kept = None
        if smtp is not None and not smtp.is_connected:
            smtp.close()
            return None
        return smtp

    def _drop_kept(self) -> None:
        """Idle for ``keep_alive`` seconds: close without QUIT (a timer cannot wait for the answer;
        the server takes a closed socket as the end of the session)."""
        if (smtp := self._take_kept()) is not None:
            smtp.close()

    async def close(self) -> None:
        """At stop: end the kept connection's session politely."""
        if (smtp := self._take_kept()) is not None:
            await _quit(smtp)


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except Exception:  # already disconnected: just drop the socket
        smtp.close()


class _SmtpConnection:
    def __init__(self, smtp: aiosmtplib.SMTP, timeout: float) -> None:
        self._smtp = smtp
        self._timeout = timeout
        self.sent = 0

    async def send(self, message: EmailMessage) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._smtp.send_message(message)
            self.sent += 1
        except _THIS_MESSAGE_ONLY as exc:
            # aiosmtplib resets the envelope after a refusal: the connection serves the next one.
            raise MessageRefused(describe(exc)) from exc
        except Exception as exc:  # connection lost or timed out: the rest of the batch waits too
            raise ServiceUnavailable(TARGET, describe(exc)) from exc

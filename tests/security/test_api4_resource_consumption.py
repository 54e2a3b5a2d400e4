"""API4:2023 Unrestricted resource consumption: bodies and headers are bounded before they are
read (413, 431), list pages are bounded (422 beyond), and failed logins are rate limited per
account (429 with Retry-After and the IETF RateLimit headers) so that guessing stops, even for
the right password, until the window has passed."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

pytestmark = pytest.mark.asyncio(loop_scope="session")

TWO_MIB = 2 * 1024 * 1024
# Where an unauthenticated client can send a body: login, through the gateway and on users' port.
LOGIN = {"gateway": ("gateway", "/api/users/login"), "users port": ("users", "/login")}


class Raw:
    """A reply read by hand, for requests ApiClient does not make (chunked bodies, huge headers)."""

    def __init__(self, status: int, headers, body) -> None:
        self.status, self.headers, self.body = status, headers, body


async def send(url: str, *, data=None, headers=None) -> Raw:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as reply:
            raw = await reply.read()
            body = json.loads(raw) if "json" in reply.headers.get("Content-Type", "") else raw.decode(errors="replace")
            return Raw(reply.status, reply.headers, body)


async def send_streaming(url: str, chunks, *, chunked: bool, length: int | None = None) -> Raw:
    """POST ``chunks`` on a raw connection, reading the answer while still writing: a server that
    refuses a body answers (413) and closes before the client has sent it all, which an HTTP client
    that reads only after writing (aiohttp) reports as a failed write instead of the answer."""
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    writer.write(f"POST {target.raw_path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
                 f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode())

    async def write_body() -> None:
        try:
            for chunk in chunks:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                await writer.drain()
            writer.write(b"0\r\n\r\n" if chunked else b"")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server refused the rest: its answer is what counts

    writing = asyncio.create_task(write_body())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = CIMultiDict(line.split(": ", 1) for line in lines if line)
        body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), 30)
    finally:
        writing.cancel()
        writer.close()
    return Raw(int(status_line.split()[1]), headers, json.loads(body))


def login_url(secured, target: str) -> str:
    name, path = LOGIN[target]
    return secured.url(name) + path


@pytest.mark.parametrize("target", LOGIN)
async def test_a_body_over_the_limit_is_refused_by_its_length(secured, target):
    body = json.dumps({"email": "big@example.com", "password": "x" * TWO_MIB}).encode()
    pieces = [body[start:start + 65536] for start in range(0, len(body), 65536)]
    reply = await send_streaming(login_url(secured, target), pieces, chunked=False, length=len(body))
    secured.assert_problem(reply, 413, "payload-too-large")


@pytest.mark.parametrize("target", LOGIN)
async def test_a_chunked_body_over_the_limit_is_cut_off(secured, target):
    chunks = [b'{"email": "big@example.com", "password": "', *[b"x" * 65536] * (TWO_MIB // 65536), b'"}']
    reply = await send_streaming(login_url(secured, target), chunks, chunked=True)
    secured.assert_problem(reply, 413, "payload-too-large")


@pytest.mark.parametrize("target", LOGIN)
async def test_headers_over_the_limit_are_refused(secured, target):
    headers = {"Content-Type": "application/json", "X-Padding": "p" * (32 * 1024)}
    reply = await send(login_url(secured, target), data=b"{}", headers=headers)
    secured.assert_problem(reply, 431, "headers-too-large")


@pytest.mark.parametrize("params", [
    {"offset": str(2**63)}, {"offset": "-1"}, {"offset": "100000000000"}, {"limit": "0"}, {"limit": "1001"},
])
async def test_page_bounds_are_enforced_on_public_lists(secured, params):
    reply = await secured.gateway().get("/api/inventory/products", params=params)
    secured.assert_problem(reply, 422, "validation-error")


async def test_failed_logins_are_rate_limited_per_account(secured):
    users = secured.gateway()
    email = f"target-{uuid.uuid4().hex[:8]}@example.com"
    password = "the-right-password-7c1"
    registered = await users.post("/api/users/register", json={"email": email, "password": password, "name": "T"})
    assert registered.status == 202, registered.body
    refused = None
    for attempt in range(30):  # the audit sent 200 in 5 s; a handful must be enough to be stopped
        reply = await users.post("/api/users/login", json={"email": email, "password": f"guess-{attempt}"})
        if reply.status == 429:
            refused = reply
            break
        secured.assert_problem(reply, 401, "invalid-credentials")
    assert refused is not None, "30 wrong passwords for one account and no 429"
    secured.assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers.get("RateLimit-Policy"), "no RateLimit-Policy header"
    assert refused.headers.get("RateLimit"), "no RateLimit header"
    # While limited, the right password gets no token either: guessing cannot go on unnoticed.
    right = await users.post("/api/users/login", json={"email": email, "password": password})
    secured.assert_problem(right, 429)

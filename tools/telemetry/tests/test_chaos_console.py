"""The chaos page against a stand-in supervisor on a real Unix socket: what it shows with and
without chaos proxies, the JSON its forms send, the flash after the redirect, and the refusal of
state-changing requests from another origin. (The page against the real supervisor, in Chromium:
tests/console.)"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import Morsel
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from microshop_telemetry.chaos_console import form_to_request, read_flash, verify_summary, write_flash

FAULTS = [{"target": "payments", "fault": "error_rate", "params": {"percent": 100.0}, "heals_at": None},
          {"target": "users", "fault": "latency", "params": {"ms": 300.0, "jitter_ms": 0.0},
           "heals_at": "2026-01-01T10:00:00+00:00"}]
CHECKS = [{"number": 1, "name": "stock conservation", "ok": True, "figures": "8 SKUs: received 10", "problems": []},
          {"number": 2, "name": "money", "ok": False, "figures": "captured 100", "problems": ["order x: 2 payments"]}]


class StandInSupervisor:
    """Answers the control socket's chaos routes as told, and keeps the changes it was sent."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.received: list[tuple[str, dict]] = []
        self.answers: dict[str, tuple[int, dict]] = {
            "GET /chaos": (200, {"ok": True, "proxies": True, "targets": ["users", "payments"], "faults": FAULTS}),
            "POST /chaos": (200, {"ok": True, "applied": "error-rate payments rate=1.0", "target": "payments",
                                  "heals_at": None}),
            "POST /heal": (200, {"ok": True, "applied": "heal all", "target": None}),
            "POST /verify": (200, {"ok": True, "passed": False, "settle_seconds": 1.5, "checks": CHECKS}),
        }
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        key = f"{request.method} {request.path}"
        if request.method == "POST":  # the changes asked for (the page's own GETs aside)
            self.received.append((key, await request.json()))
        status, body = self.answers[key]
        return web.json_response(body, status=status)

    async def __aenter__(self) -> StandInSupervisor:
        app = web.Application()
        app.router.add_route("*", "/{action}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.socket)).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


@pytest.fixture
def socket_path() -> Path:
    with tempfile.TemporaryDirectory(prefix="chaos-") as short:  # a Unix socket path has at most 107 bytes
        yield Path(short) / "control.sock"


@pytest_asyncio.fixture
async def supervisor(socket_path) -> AsyncIterator[StandInSupervisor]:
    async with StandInSupervisor(socket_path) as running:
        yield running


def own_origin(receiver) -> dict[str, str]:
    return {"Origin": receiver.url, "Sec-Fetch-Site": "same-origin"}


@dataclass
class Reply:
    status: int
    headers: dict
    body_text: str
    flash: Morsel | None


async def post_form(receiver, path: str, form: dict, headers: dict) -> Reply:
    async with aiohttp.ClientSession() as http, \
            http.post(receiver.url + path, data=form, headers=headers, allow_redirects=False) as reply:
        return Reply(reply.status, dict(reply.headers), await reply.text(), reply.cookies.get("microshop_chaos_flash"))


async def page_after(receiver, flash_cookie) -> str:
    cookies = {"microshop_chaos_flash": flash_cookie.value} if flash_cookie else {}
    async with aiohttp.ClientSession(cookies=cookies, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http, \
            http.get(receiver.url + "/chaos") as reply:
        assert reply.status == 200
        assert reply.headers["X-Frame-Options"] == "DENY"
        return await reply.text()


async def test_without_a_control_socket_the_page_says_how_to_get_chaos_proxies_and_nothing_else(receiver):
    page = await page_after(receiver, None)
    assert "microshop up --chaos-proxies" in page
    assert "without --control-socket" in page
    assert "<form method=\"post\"" not in page


async def test_a_system_without_proxies_gets_the_same_advice(receiver_at, supervisor):
    supervisor.answers["GET /chaos"] = (200, {"ok": True, "proxies": False, "targets": [], "faults": []})
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        page = await page_after(receiver, None)
    assert "this system runs without chaos proxies" in page
    assert "microshop up --chaos-proxies" in page
    assert 'id="inject"' not in page


async def test_the_page_lists_the_targets_and_the_active_faults_each_with_its_heal_button(receiver_at, supervisor):
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        page = await page_after(receiver, None)
    assert page.count("<option>payments</option>") == 4  # one target list per fault kind
    assert '<tr data-target="payments" data-fault="error_rate">' in page
    assert "percent=100.0" in page
    assert "2026-01-01T10:00:00+00:00" in page  # the timed one says when it heals
    assert "Heal users" in page and "Heal payments" in page and "Heal all" in page


async def test_a_fault_form_sends_its_fields_as_numbers_and_the_redirect_shows_what_happened(receiver_at, supervisor):
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        form = {"fault": "error_rate", "target": "payments", "percent": "100", "seconds": ""}
        reply = await post_form(receiver, "/chaos/faults", form, own_origin(receiver))
        assert reply.status == 303 and reply.headers["Location"] == "/chaos"
        assert supervisor.received == [("POST /chaos", {"fault": "error_rate", "target": "payments",
                                                        "percent": 100.0})]
        page = await page_after(receiver, reply.flash)
    assert 'id="flash" class="flash ok">injected error-rate payments rate=1.0; until healed<' in page


async def test_the_supervisors_refusal_is_the_flash(receiver_at, supervisor):
    supervisor.answers["POST /chaos"] = (400, {"ok": False, "error": "percent must be from 0 up to 100, not 150"})
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        reply = await post_form(receiver, "/chaos/faults", {"fault": "reset", "target": "payments", "percent": "150"},
                                own_origin(receiver))
        page = await page_after(receiver, reply.flash)
    assert "not injected: percent must be from 0 up to 100, not 150" in page
    assert 'class="flash problem"' in page


async def test_a_field_that_is_no_number_never_reaches_the_supervisor(receiver_at, supervisor):
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        reply = await post_form(receiver, "/chaos/faults", {"fault": "latency", "target": "users", "ms": "fast"},
                                own_origin(receiver))
        page = await page_after(receiver, reply.flash)
    assert supervisor.received == []
    assert "ms must be a number, not &#39;fast&#39;" in page


async def test_verify_runs_with_the_settle_time_and_every_check_is_listed_with_its_problems(receiver_at, supervisor):
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        reply = await post_form(receiver, "/chaos/verify", {"settle_seconds": "12"}, own_origin(receiver))
        page = await page_after(receiver, reply.flash)
    assert supervisor.received == [("POST /verify", {"settle_seconds": 12.0})]
    assert "verify: 1 of 2 invariants violated (after 1.5 s): 2. money" in page
    assert '<tr data-number="1" class="pass">' in page and '<tr data-number="2" class="failing">' in page
    assert "<li>order x: 2 payments</li>" in page and "8 SKUs: received 10" in page


async def test_heal_all_sends_no_target(receiver_at, supervisor):
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        reply = await post_form(receiver, "/chaos/heal", {}, own_origin(receiver))
        assert reply.status == 303
    assert supervisor.received == [("POST /heal", {"target": None})]


@pytest.mark.parametrize(("headers", "says"), [
    ({"Origin": "http://evil.example"}, "not from http://evil.example"),
    ({"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site: cross-site"),
    ({"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site: same-site"),  # another port of the same host
    ({"Host": "evil.example"}, "not for host 'evil.example'"),  # a DNS-rebound name for 127.0.0.1
])
async def test_a_change_from_another_origin_is_refused_with_a_problem(receiver_at, supervisor, headers, says):
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        for path, form in (("/chaos/faults", {"fault": "partition", "target": "users"}), ("/chaos/heal", {}),
                           ("/chaos/verify", {})):
            reply = await post_form(receiver, path, form, headers)
            assert reply.status == 403, (path, reply.body_text)
            assert reply.headers["Content-Type"] == "application/problem+json"
            assert says in reply.body_text
    assert supervisor.received == []


async def test_a_client_that_is_no_browser_may_post_without_origin_headers(receiver_at, supervisor):
    async with receiver_at(control_socket=supervisor.socket) as receiver:
        reply = await post_form(receiver, "/chaos/heal", {"target": "users"}, {})
    assert reply.status == 303
    assert supervisor.received == [("POST /heal", {"target": "users"})]


def test_form_fields_become_the_supervisors_json():
    assert form_to_request({"fault": "latency", "target": "users", "ms": "300", "jitter_ms": "", "x": "1"},
                           ("fault", "target", "ms", "jitter_ms")) == {"fault": "latency", "target": "users",
                                                                        "ms": 300.0}
    with pytest.raises(ValueError, match="jitter ms must be a number"):
        form_to_request({"jitter_ms": "lots"}, ("jitter_ms",))


def test_a_flash_survives_its_cookie_and_a_forged_one_is_ignored():
    assert read_flash(write_flash(False, "not healed: ünïcode; \"quoted\"")) == {
        "ok": False, "text": "not healed: ünïcode; \"quoted\""}
    assert read_flash("not-base64!") is None
    assert read_flash(write_flash(True, "x")[:-2]) is None


def test_the_verify_summary_names_what_failed():
    assert verify_summary({"settle_seconds": 2, "checks": CHECKS[:1]}) == "verify: all 1 invariants hold (after 2 s)"
    assert verify_summary({"settle_seconds": 2, "checks": CHECKS}).endswith("2. money")

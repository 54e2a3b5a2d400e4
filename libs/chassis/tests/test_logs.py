"""A service's log (logs.configure_logging): one JSON object per line on stdout, from structlog and
from the standard library's loggers alike, whatever the values logged."""

from __future__ import annotations

import datetime
import io
import json
import logging
import sys
import uuid

import pytest
import structlog
from microshop_chassis.logs import configure_logging


@pytest.fixture
def stdout(monkeypatch):
    """What the process writes to stdout, as text of the given encoding; logging put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def capture(encoding: str = "utf-8") -> io.BytesIO:
        raw = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding=encoding, line_buffering=True))
        return raw

    yield capture
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def lines(raw: io.BytesIO) -> list[dict]:
    sys.stdout.flush()
    return [json.loads(line) for line in raw.getvalue().decode("utf-8").splitlines()]


def test_each_line_is_one_json_object_whatever_its_values(stdout):
    raw = stdout()
    configure_logging("orders")
    log = structlog.get_logger("test")
    log.info("charged", amount_cents=1250, when=datetime.datetime(2026, 12, 1, 9, 30),
             order_id=uuid.UUID(int=7), tags={"a"}, opaque=object(), name="Zoë")
    try:
        raise ValueError("no such order")
    except ValueError:
        log.exception("failed")
    logging.getLogger("uvicorn.error").warning("from the %s", "standard library")

    charged, failed, foreign = lines(raw)
    assert charged["event"] == "charged" and charged["service"] == "orders" and charged["level"] == "info"
    assert charged["amount_cents"] == 1250 and charged["when"] == "2026-12-01T09:30:00"
    assert charged["order_id"] == str(uuid.UUID(int=7)) and charged["tags"] == ["a"]
    assert charged["opaque"].startswith("<object object") and charged["name"] == "Zoë"
    assert charged["timestamp"].endswith("Z")
    assert "ValueError: no such order" in failed["exception"]
    assert foreign["event"] == "from the standard library" and foreign["level"] == "warning"


def test_a_stdout_that_is_not_utf8_gets_non_ascii_characters_escaped(stdout):
    raw = stdout(encoding="ascii")
    configure_logging("orders")
    structlog.get_logger("test").info("hello", name="Zoë")
    assert b"Zo\\u00eb" in raw.getvalue()
    assert lines(raw)[0]["name"] == "Zoë"

"""A full card number never rests anywhere in payments: not its database, its logs or its answers.

payments runs here as a real process (``python -m microshop_payments``) with its output sent to a
file, so every line any logger prints is checked, at DEBUG level. (In-process capsys/caplog would
miss lines: the chassis caches each structlog logger with the stream current at its first use.)
"""

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestServer
from microshop_chassis.tables import outbox
from microshop_chassis.testing import ApiClient, free_port, wait_until
from microshop_payments.models import Base
from sqlalchemy.ext.asyncio import create_async_engine

CARDS = {"4242424242424242": 201, "4000 0000 0000 0002": 402, "4000000000009995": 402, "4242424242424241": 422}


async def test_card_numbers_are_never_stored_logged_or_returned(database_url, nats_server, processor, mint, tmp_path):
    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response(await mint.jwks())

    users_app = web.Application()  # stands in for users: serves the mint's signing keys
    users_app.router.add_get("/.well-known/jwks.json", jwks)
    users = TestServer(users_app)
    await users.start_server()
    port = free_port()
    env = {
        **os.environ, "MICROSHOP_PAYMENTS_PORT": str(port), "MICROSHOP_PAYMENTS_DATABASE_URL": database_url,
        "MICROSHOP_NATS_URL": nats_server.url, "MICROSHOP_CARD_PROCESSOR_URL": processor.url,
        "MICROSHOP_USERS_URL": str(users.make_url("")), "MICROSHOP_DATA_DIR": str(tmp_path),
        "MICROSHOP_LOG_LEVEL": "DEBUG",
    }
    log_path = tmp_path / "payments.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "microshop_payments", env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
    try:
        await wait_until(lambda: _healthy(process, port), timeout=30, what="payments to start")
        answers = await _use_every_card(ApiClient(f"http://127.0.0.1:{port}", mint.token(role="service")))
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
        await users.close()

    log_text = log_path.read_text(errors="replace")
    assert "payment_recorded" in log_text and "/payment-methods" in log_text  # the log was captured
    stored = await _database_text(database_url)
    assert "DECLINED" in stored and "REFUNDED" in stored  # the rows were read
    for number in CARDS:
        for form in {number, number.replace(" ", "")}:
            assert form not in log_text, "card number in the log"
            assert form not in stored, "card number in the database"
            assert form not in answers, "card number in a response"
    assert "4242" in answers  # the last four are what may be shown


async def _healthy(process: asyncio.subprocess.Process, port: int) -> bool:
    if process.returncode is not None:
        raise RuntimeError(f"payments exited with {process.returncode}")
    try:
        return (await ApiClient(f"http://127.0.0.1:{port}").get("/health")).status == 200
    except aiohttp.ClientError:
        return False


async def _use_every_card(api: ApiClient) -> str:
    """Tokenize, charge, read and refund with each test card; return every answer as text."""
    expiry_year = datetime.now(UTC).year + 2
    answers = []
    for number, expected_charge_status in CARDS.items():
        card = {"card_number": number, "expiry_month": 12, "expiry_year": expiry_year, "cvc": "123"}
        tokenized = await api.post("/payment-methods", json=card)
        answers.append(tokenized)
        if expected_charge_status == 422:
            assert tokenized.status == 422
            continue
        order_id = str(uuid.uuid4())
        charged = await api.post("/charges", headers={"Idempotency-Key": order_id}, json={
            "order_id": order_id, "customer_id": str(uuid.uuid4()), "amount_cents": 1500, "currency": "USD",
            "card_token": tokenized.body["token"]})
        assert charged.status == expected_charge_status
        answers += [charged, await api.get(f"/payments/{order_id}")]
        if charged.status == 201:
            answers.append(await api.post(f"/payments/{order_id}/refund"))
    # Malformed input is refused without echoing it.
    too_long = await api.post("/payment-methods", json={"card_number": "4242424242424242" * 2, "expiry_month": 1,
                                                         "expiry_year": expiry_year, "cvc": "123"})
    as_number = await api.post("/payment-methods", json={"card_number": 4242424242424242, "expiry_month": 1,
                                                         "expiry_year": expiry_year, "cvc": "123"})
    assert too_long.status == as_number.status == 422
    answers += [too_long, as_number]
    return "\n".join(json.dumps({"body": a.body, "headers": dict(a.headers)}) for a in answers)


async def _database_text(database_url: str) -> str:
    """Every row of every payments table, plus the raw SQLite files when there are any."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = [str((await conn.execute(sa.select(table))).all()) for table in (*Base.metadata.sorted_tables,
                                                                                    outbox)]
    finally:
        await engine.dispose()
    text = "\n".join(rows)
    if database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[1])
        for file in (path, path.with_name(path.name + "-wal")):
            if file.exists():
                text += file.read_bytes().decode("latin-1")
    return text

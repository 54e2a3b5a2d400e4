"""`microshop bench --floor`: what the two things a checkout is made of cost on this machine, bare.

A hop: an aiohttp server on a free loopback port answering a small JSON, one aiohttp client calling
it sequentially; wall µs per round trip, and CPU µs per request of both sides together (they run in
this one process, so the figure is client + server). A commit: an INSERT and a commit in SQLite in
WAL mode with synchronous=NORMAL, as the services run it; wall µs per commit (no fsync per commit in
that mode: the WAL is synced at checkpoints).
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from aiohttp import web


@dataclass(frozen=True)
class Floor:
    hop_us: float  # wall, per round trip
    hop_cpu_us: float  # CPU of client and server together, per request
    commit_us: float  # wall, per INSERT + commit
    commit_cpu_us: float
    hops: int
    commits: int

    def as_dict(self) -> dict:
        return {key: round(value, 1) if isinstance(value, float) else value for key, value in asdict(self).items()}


async def measure_hop(requests: int) -> tuple[float, float]:
    """(wall µs per round trip, CPU µs per request of both sides)."""
    async def answer(_: web.Request) -> web.Response:
        return web.json_response({"sku": "MUG-STONEWARE-12", "available": 7})

    app = web.Application()
    app.router.add_get("/item", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 (aiohttp names no public accessor)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/item"
            for _ in range(min(50, requests)):  # warm: the connection, the first-call paths
                async with http.get(url) as reply:
                    await reply.json()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(requests):
                async with http.get(url) as reply:
                    await reply.json()
            return ((time.perf_counter() - wall) / requests * 1e6, (time.process_time() - cpu) / requests * 1e6)
    finally:
        await runner.cleanup()


def measure_commit(commits: int, directory: Path | None = None) -> tuple[float, float]:
    """(wall µs per INSERT + commit, CPU µs per commit)."""
    with tempfile.TemporaryDirectory(prefix="microshop-floor-", dir=directory) as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
            wall, cpu = time.perf_counter(), time.process_time()
            for n in range(commits):
                db.execute("BEGIN")
                db.execute("INSERT INTO events (body) VALUES (?)", (f'{{"n": {n}}}',))
                db.execute("COMMIT")
            return ((time.perf_counter() - wall) / commits * 1e6, (time.process_time() - cpu) / commits * 1e6)
        finally:
            db.close()


async def measure_floor(hops: int = 2000, commits: int = 2000, directory: Path | None = None) -> Floor:
    hop_us, hop_cpu_us = await measure_hop(hops)
    commit_us, commit_cpu_us = measure_commit(commits, directory)
    return Floor(hop_us, hop_cpu_us, commit_us, commit_cpu_us, hops, commits)

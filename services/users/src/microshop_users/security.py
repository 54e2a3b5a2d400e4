"""Password hashing (argon2id), in a bounded number of worker threads with a bounded queue."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .domain import HashingBusy


class Passwords:
    """argon2id hashes, computed in worker threads, at most ``slots`` at once: each takes 19 MiB
    and a core for tens of milliseconds, so a burst of logins waits here instead of multiplying
    the process's memory (and thrashing 2 cores). At most ``queue`` wait: beyond that a request
    is refused at once (``HashingBusy``, 503) rather than queueing behind hundreds of guesses."""

    def __init__(self, *, slots: int = 2, queue: int = 16) -> None:
        # OWASP's argon2id minimum (m=19 MiB, t=2, p=1) rather than argon2-cffi's default 64 MiB:
        # a hash must not double the process's memory, and a login must stay tens of milliseconds.
        self._hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
        # Verified when the e-mail is unknown, so a wrong e-mail costs as long as a wrong password.
        self._dummy_hash = self._hasher.hash("not-a-real-password")
        self._slots = asyncio.BoundedSemaphore(slots)
        # Threads of their own, as many as the slots: glibc gives each thread that allocates an
        # arena that keeps freed memory, so hashes spread over the shared default pool (which
        # zxcvbn and others use too) left ~19 MiB behind in each of its threads (users' RSS after a
        # burst of 32 sign-ups: 151 MB with 2 threads, 240 MB spread over the pool).
        self._threads = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="argon2")
        self._capacity = slots + queue
        self._admitted = 0  # hashing now or waiting for a slot

    async def hash(self, password: str) -> str:
        return await self._in_slot(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``; never for ``None`` (no such account),
        which still costs one verification."""

        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy_hash, password) and password_hash is not None
            except (VerificationError, InvalidHashError):
                return False

        return await self._in_slot(check)

    async def _in_slot(self, fn, *args):
        if self._admitted >= self._capacity:
            raise HashingBusy()
        self._admitted += 1
        try:
            async with self._slots:
                return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)
        finally:
            self._admitted -= 1

    async def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

"""The chaos controller's plan and its bookkeeping, without a system: which faults the monkey draws
for a seed, that every fault is logged, and that a timed fault is undone even when interrupted."""

import asyncio
import json

import pytest
from microshop_chassis.testing import wait_until
from microshop_cli.chaos import FAULTS, Chaos, FaultRecord
from microshop_cli.errors import MicroshopError
from microshop_cli.state import DataDir


class RecordingChaos(Chaos):
    """Records the faults it is asked for instead of applying them (the real ones are exercised
    against a whole system in tests/chaos)."""

    def __init__(self, paths: DataDir, proxies: bool = True) -> None:
        processes = {"nats": {"pid": 1}, "chaos-proxy": {"pid": 2, "url": "http://127.0.0.1:9"}}
        if not proxies:
            processes.pop("chaos-proxy")
        super().__init__(paths, lambda: {"processes": processes})
        self.calls: list[tuple] = []

    async def kill(self, name, *, down_for=0.0):
        self.calls.append(("kill", name))
        return self._log(FaultRecord("kill", name))

    async def pause(self, name, seconds):
        self.calls.append(("pause", name, seconds))
        return self._log(FaultRecord("pause", name, seconds=seconds))

    async def broker_restart(self, *, down_for=0.0):
        self.calls.append(("broker-restart",))
        return self._log(FaultRecord("broker-restart", "nats"))

    async def _toxic(self, fault, name, kind, attributes, seconds):
        self.calls.append((fault, name, tuple(sorted(attributes.items())), seconds))
        return self._log(FaultRecord(fault, name, attributes, seconds))

    async def partition(self, name, seconds, *, mode="refuse"):
        self.calls.append(("partition", name, seconds, mode))
        return self._log(FaultRecord("partition", name, {"mode": mode}, seconds))

    async def heal(self, name=None):
        return self._log(FaultRecord("heal", name or "all"))


async def plan(tmp_path, seed, **options):
    chaos = RecordingChaos(DataDir(tmp_path / str(seed)), **options)
    await chaos.monkey(duration=1.0, seed=seed, min_gap_seconds=0, max_gap_seconds=0.001)
    return chaos


async def test_the_same_seed_draws_the_same_faults_and_another_seed_others(tmp_path):
    first, again, other = await plan(tmp_path / "a", 7), await plan(tmp_path / "b", 7), await plan(tmp_path / "c", 8)
    length = min(len(first.calls), len(again.calls))
    assert length >= 5
    assert first.calls[:length] == again.calls[:length]
    assert first.calls[:5] != other.calls[:5]
    # Dealt from a deck: the first round holds every kind exactly once.
    assert sorted(call[0] for call in first.calls[:len(FAULTS)]) == sorted(FAULTS)


async def test_without_proxies_the_monkey_draws_process_faults_only(tmp_path):
    chaos = await plan(tmp_path, 3, proxies=False)
    assert {call[0] for call in chaos.calls} <= {"kill", "pause", "broker-restart"}


async def test_every_fault_and_the_final_heal_are_logged_as_json_lines(tmp_path):
    chaos = await plan(tmp_path, 5)
    lines = [json.loads(line) for line in chaos.paths.log_file("chaos").read_text().splitlines()]
    assert len(lines) == len(chaos.calls) + 1
    assert lines[-1]["fault"] == "heal" and all("at" in line for line in lines)


async def test_unknown_faults_and_unproxied_targets_are_refused(tmp_path):
    chaos = RecordingChaos(DataDir(tmp_path))
    with pytest.raises(MicroshopError, match="unknown faults"):
        await chaos.monkey(duration=1, seed=1, faults=["meteor"])
    with pytest.raises(MicroshopError, match="has no chaos proxy"):
        await Chaos(chaos.paths, chaos._state).latency("nats", 100)


async def test_a_pause_is_resumed_even_when_interrupted(tmp_path):
    process = await asyncio.create_subprocess_exec("sleep", "30")
    chaos = Chaos(DataDir(tmp_path), lambda: {"processes": {"sleeper": {"pid": process.pid}}})
    pausing = asyncio.create_task(chaos.pause("sleeper", 30))

    def state() -> str:
        return open(f"/proc/{process.pid}/stat").read().rsplit(")", 1)[1].split()[0]

    async def stopped() -> bool:
        return state() == "T"

    await wait_until(stopped, timeout=5, what="the process to be stopped")
    pausing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pausing
    assert state() not in ("T", "t")  # running, sleeping, or in a page fault ("D"): not stopped
    process.kill()
    await process.wait()

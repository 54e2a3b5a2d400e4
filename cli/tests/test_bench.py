"""`microshop bench`'s parts that can be checked without a system: when the open loop starts each
action and what latency it counts, the user mix, the latency figures, the floor, the CPU of a
process tree, the comparison's table and plot."""

from __future__ import annotations

import asyncio
import heapq
import subprocess
import sys
from collections import Counter

import pytest
from cli_dummies import dummy
from microshop_chassis.testing import wait_until
from microshop_cli import bench_compare
from microshop_cli.bench import BenchResult
from microshop_cli.bench_compare import ModeRun, compare_table, parse_modes, plot, run_mode
from microshop_cli.bench_floor import measure_floor
from microshop_cli.bench_load import BROWSE, CHECKOUT, closed_loop, open_loop, parse_levels, plan_actions
from microshop_cli.bench_proc import ProcessTrees, cpu_seconds, tree
from microshop_cli.bench_stats import cdf, latency_ms, percentile
from microshop_cli.components import free_ports
from microshop_cli.errors import MicroshopError
from microshop_cli.system import SystemConfig
from rich.console import Console


class VirtualTime:
    """A clock that jumps to the next timer whenever every task is waiting: seconds of schedule in
    no time, the same every run."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future]] = []
        self._count = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), self._count, future))
        await future

    async def run(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        while not task.done():
            for _ in range(50):  # every task that can run runs until it waits on a timer
                await asyncio.sleep(0)
            if self._timers:
                at, _, future = heapq.heappop(self._timers)
                self.now = max(self.now, at)
                future.set_result(None)
        return task.result()


def server_stalled(time: VirtualTime, start: float, end: float, service: float = 0.002):
    """An action answered in ``service`` seconds, but not before ``end`` if it arrives in [start, end)."""
    async def action(n: int, kind: str) -> str:
        if start <= time.now < end:
            await time.sleep(end - time.now)
        await time.sleep(service)
        return "OK"

    return action


async def test_the_open_loop_counts_a_server_stall_in_every_action_due_during_it():
    time = VirtualTime()
    kinds = [CHECKOUT] * 100  # 100/s for one second; the server stalls from 0.2 to 0.5 s
    samples = await time.run(open_loop(kinds, 100.0, server_stalled(time, 0.2, 0.5), time.clock, time.sleep))

    latency = {sample.n: sample.latency for sample in samples}
    assert latency[19] == pytest.approx(0.002)
    assert latency[20] == pytest.approx(0.302)  # due at 0.20, answered at 0.502
    assert latency[35] == pytest.approx(0.152)
    assert latency[49] == pytest.approx(0.012)
    assert latency[50] == pytest.approx(0.002)
    assert sum(value > 0.01 for value in latency.values()) == 30  # every action due in the 0.3 s stall
    assert not any(sample.late for sample in samples)  # the load generator kept its schedule
    assert percentile(list(latency.values()), 99) > 0.25


async def test_a_closed_loop_lets_the_same_stall_hide_in_one_sample():
    time = VirtualTime()
    samples = await time.run(closed_loop([CHECKOUT] * 300, 1, server_stalled(time, 0.2, 0.5), time.clock))

    slow = [sample.latency for sample in samples if sample.latency > 0.01]
    assert len(slow) == 1  # the one worker waited; the actions it would have sent meanwhile were never sent


async def test_the_open_loop_counts_late_starts_and_their_latency_from_the_intended_start():
    time = VirtualTime()

    async def action(n: int, kind: str) -> str:
        if n == 10:
            time.now += 0.305  # the load generator's own loop blocked (a GC pause), not the server
        await time.sleep(0.002)
        return "OK"

    samples = {s.n: s for s in await time.run(open_loop([CHECKOUT] * 60, 100.0, action, time.clock, time.sleep))}

    assert sorted(n for n, sample in samples.items() if sample.late) == list(range(11, 40))
    assert samples[11].started == pytest.approx(0.405)
    assert samples[11].latency == pytest.approx(0.405 + 0.002 - 0.11)  # from 0.11, when it was due
    assert samples[45].latency == pytest.approx(0.002)


async def test_the_open_loop_starts_actions_without_waiting_for_answers():
    time = VirtualTime()
    samples = await time.run(open_loop([CHECKOUT] * 10, 10.0, server_stalled(time, 0, 0, service=5.0),
                                       time.clock, time.sleep))
    assert [sample.started for sample in sorted(samples, key=lambda s: s.n)] == pytest.approx(
        [n / 10 for n in range(10)])


def test_a_user_mix_has_exactly_the_checkouts_asked_and_about_the_browsing_share():
    kinds = plan_actions(1000, 90, seed=7)
    counts = Counter(kinds)
    assert counts[CHECKOUT] == 1000 and kinds[-1] == CHECKOUT
    assert 0.88 < counts[BROWSE] / len(kinds) < 0.92
    assert plan_actions(1000, 90, seed=7) == kinds
    assert plan_actions(5, 0) == [CHECKOUT] * 5
    with pytest.raises(ValueError):
        plan_actions(5, 100)


def test_sweep_levels_and_modes_are_parsed_or_refused():
    assert parse_levels("1, 4,16") == [1, 4, 16]
    for bad in ("", "0,4", "a,b"):
        with pytest.raises(ValueError):
            parse_levels(bad)
    assert parse_modes("monolith,microservices") == ["monolith", "microservices"]
    with pytest.raises(MicroshopError, match="unknown mode"):
        parse_modes("monolith,serverless")


def test_percentiles_interpolate_between_ranks_including_p99_9():
    values = [n / 1000 for n in range(1, 1001)]  # 1 ms .. 1000 ms
    assert percentile(values, 50) == pytest.approx(0.5005)
    assert percentile(values, 99.9) == pytest.approx(0.999001)
    assert percentile([0.2], 99.9) == 0.2 and percentile([], 50) is None
    figures = latency_ms(values)
    assert list(figures) == ["p50", "p95", "p99", "p99.9", "max"] and figures["max"] == 1000.0
    assert latency_ms([]) == {"p50": None, "p95": None, "p99": None, "p99.9": None, "max": None}


def test_the_cdf_rises_to_one_at_the_largest_value():
    points = cdf([0.3, 0.1, 0.2, 0.4], points=200)
    assert points == [(0.1, 0.25), (0.2, 0.5), (0.3, 0.75), (0.4, 1.0)]
    many = cdf([n / 10_000 for n in range(10_000)], points=100)
    assert len(many) == 100 and many[-1] == (0.9999, 1.0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(many, many[1:], strict=False))
    assert cdf([]) == []


async def test_the_floor_measures_a_real_hop_and_a_real_commit(tmp_path):
    floor = await measure_floor(hops=100, commits=100, directory=tmp_path)
    assert floor.hop_us > 0 and floor.hop_cpu_us > 0 and floor.commit_us > 0 and floor.commit_cpu_us >= 0
    assert floor.as_dict()["hops"] == 100
    assert list(tmp_path.iterdir()) == []  # its database went with its temporary directory


BURNER = "import pathlib, sys\nwhile not pathlib.Path(sys.argv[1]).exists():\n    pass\n"
PARENT = ("import subprocess, sys\nsubprocess.run([sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
          "print('reaped', flush=True)\nsys.stdin.read()\n")


def polled(check):
    async def predicate() -> bool:
        return check()

    return predicate


async def test_a_process_is_charged_the_cpu_of_the_children_it_forked_alive_and_reaped(tmp_path):
    stop = tmp_path / "stop"
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", PARENT, BURNER, str(stop),
                                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        await wait_until(polled(lambda: len(tree(parent.pid)) == 2), timeout=10)
        trees = ProcessTrees({"monolith": parent.pid})
        trees.start()
        await wait_until(polled(lambda: trees.cpu_used()["monolith"] >= 0.3), timeout=20)  # the child burns
        stop.touch()
        assert await parent.stdout.readline() == b"reaped\n"
        assert tree(parent.pid) == [parent.pid]
        assert trees.cpu_used()["monolith"] >= 0.3  # the child's CPU stays, as the parent's reaped children's
        assert cpu_seconds(parent.pid, reaped_children=False) < 0.2  # not the parent's own: it only waited
        assert trees.pss_mb()["monolith"] > 0
        # A listed process is charged as itself, not again to the one that forked it.
        child_listed = ProcessTrees({"a": parent.pid, "b": parent.pid})
        assert child_listed._trees()["a"] == [parent.pid]
    finally:
        stop.touch()
        parent.stdin.close()
        await parent.wait()


def bench_result(throughput_latencies: list[float]) -> BenchResult:
    result = BenchResult(4, 2, 1.0, latencies=throughput_latencies, outcomes=Counter(CONFIRMED=4),
                         processes={"orders": {"rss_mb": 100.0, "cpu_s": 0.04, "cpu_ms_per_checkout": 10.0},
                                    "payments": {"rss_mb": 90.0, "cpu_s": 0.02, "cpu_ms_per_checkout": 5.0}},
                         ready_seconds=1.7, cpu_s=0.06, drained_seconds=2.5)
    result.sweep = [{"concurrency": 1, "throughput_per_s": 20.0}, {"concurrency": 4, "throughput_per_s": 35.0}]
    return result


def test_the_comparison_table_and_plot_show_a_skipped_mode_beside_the_others(tmp_path):
    runs = [ModeRun("microservices", bench_result([0.05, 0.06, 0.07, 0.2]), pss_idle_mb=600.0, pss_after_mb=640.5),
            ModeRun("monolith-workers", skipped="skipped: PostgreSQL at 127.0.0.1:1 did not accept a session")]
    console = Console(record=True, width=250)
    console.print(compare_table(runs, 4, 2))
    lines = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
             for line in console.export_text().splitlines() if line.count("│") == 4}
    assert lines[""] == ["", "skipped: PostgreSQL at 127.0.0.1:1 did not accept a session"]
    assert lines["up: ready in s"] == ["1.7", ""]
    assert lines["checkouts/s"] == ["4", ""]
    assert lines["PSS MB after"] == ["640.5", ""]
    assert lines["deferred work done in s"] == ["2.5", ""]
    assert lines["CPU-ms/checkout"] == ["15", ""]
    assert [name for name in lines if name.startswith("orders") or name.startswith("payments")] == [
        "orders", "payments"]  # the costliest first
    assert lines["orders"] == ["10", ""]

    png = plot(runs, tmp_path / "compare.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ModeRun("monolith", skipped="skipped: x").as_dict() == {"mode": "monolith", "skipped": "skipped: x"}


def test_several_rounds_alternate_the_order_and_give_each_figure_its_median_and_range(tmp_path, monkeypatch):
    ran = []
    # One slow minute (the third run) makes whichever mode runs in it look dearer.
    cpu_of_run = {1: 10.0, 2: 8.0, 3: 14.0, 4: 9.0, 5: 11.0, 6: 7.5}

    async def measured(mode, checkouts, concurrency, **options):
        ran.append(mode)
        result = bench_result([0.05, 0.06, 0.07, 0.2])
        result.seconds = len(ran)  # throughput 4, 2, 1.33, 1, 0.8, 0.67
        result.processes = {"orders": {"rss_mb": 100.0, "cpu_ms_per_checkout": cpu_of_run[len(ran)]}}
        result.cpu_s = cpu_of_run[len(ran)] * checkouts / 1000
        return ModeRun(mode, result, pss_idle_mb=400.0 + len(ran))

    monkeypatch.setattr(bench_compare, "run_mode", measured)
    runs = asyncio.run(bench_compare.compare(["microservices", "monolith"], 4, 2, rounds=3))
    assert ran == ["microservices", "monolith", "monolith", "microservices", "microservices", "monolith"]
    assert [run.round for run in runs] == [1, 1, 2, 2, 3, 3]

    console = Console(record=True, width=250)
    console.print(compare_table(runs, 4, 2))
    text = console.export_text()
    assert "3 rounds in alternating order" in " ".join(text.split())
    lines = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
             for line in text.splitlines() if line.count("│") == 4}
    assert lines["CPU-ms/checkout"] == ["10 (9-11)", "8 (7.5-14)"]  # runs 1, 4, 5 and 2, 3, 6
    assert lines["PSS MB idle"] == ["404 (401-405)", "403 (402-406)"]
    # The plot and the sweep tables show each mode's run of median throughput.
    assert [bench_compare.representative(mode_runs).round
            for mode_runs in bench_compare.by_mode(runs).values()] == [2, 2]
    assert plot(runs, tmp_path / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_a_mode_that_cannot_start_is_skipped_with_the_reason(tmp_path, monkeypatch):
    def broken(mode, data_dir, *args) -> SystemConfig:
        port = free_ports(["broken"])["broken"]
        return SystemConfig(data_dir=data_dir, seed=False,
                            components=lambda _config: [dummy("broken", port, 0, exit_code=7)])

    monkeypatch.setattr(bench_compare, "mode_config", broken)
    run = await run_mode("monolith", 5, 2)
    assert run.result is None
    assert run.skipped.startswith("skipped: ") and "broken exited with code 7" in run.skipped


def test_matplotlib_is_not_imported_by_the_command_until_compare():
    code = "import sys, microshop_cli.main, microshop_cli.bench; print('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"

"""`microshop bench --compare`: each mode started fresh in turn (free ports, a temporary data dir),
the same bench against each, one table and one plot.

Modes: ``microservices`` (a process per service), ``monolith`` (the six services and the gateway in
one process), ``monolith-workers`` (that process forking ``workers`` children sharing its port, on
PostgreSQL: the embedded one in the mode's data dir, or an existing server under a prefix of its
own, dropped afterwards). A mode that fails to start is reported as skipped and the others still run.

With ``rounds`` > 1 the modes run that many times, in alternating order (A B, B A, A B...), and the
table gives each figure's median with its range: on a shared machine one run can be off by a fifth,
and whichever mode runs in a slow minute would look the dearer.
"""

from __future__ import annotations

import statistics
import tempfile
import uuid
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from rich.table import Table

from .bench import BenchResult, fresh, run_bench
from .bench_proc import ProcessTrees
from .bench_stats import cdf
from .errors import MicroshopError
from .postgres import EMBEDDED, drop_prefixed
from .system import SystemConfig

MODES = ("microservices", "monolith", "monolith-workers")
# What a system that cannot start raises (a port taken, a missing PostgreSQL, a component never ready).
STARTING_FAILED = (MicroshopError, OSError, RuntimeError, aiohttp.ClientError, TimeoutError)


@dataclass
class ModeRun:
    mode: str
    result: BenchResult | None = None
    pss_idle_mb: float | None = None  # every process and its descendants, after ready
    pss_after_mb: float | None = None  # the same, after the bench
    skipped: str | None = None  # why the mode has no figures
    round: int = 1  # which round of the comparison (1-based)

    def as_dict(self) -> dict:
        if self.result is None:
            return {"mode": self.mode, "skipped": self.skipped}
        return {"mode": self.mode, "pss_idle_mb": self.pss_idle_mb, "pss_after_mb": self.pss_after_mb,
                **self.result.as_dict()}


def parse_modes(text: str) -> list[str]:
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise MicroshopError(f"unknown mode(s) {', '.join(unknown) or '(none)'}; known: {', '.join(MODES)}")
    return modes


def mode_config(mode: str, data_dir: Path, workers: int = 2, postgres: str = EMBEDDED,
                postgres_prefix: str = "") -> SystemConfig:
    if mode == "microservices":
        return SystemConfig.with_free_ports(data_dir)
    if mode == "monolith":
        return SystemConfig.with_free_ports(data_dir, monolith=True)
    return SystemConfig.with_free_ports(data_dir, monolith=True, workers=workers, postgres=postgres,
                                        postgres_prefix=postgres_prefix if postgres != EMBEDDED else "")


async def run_mode(mode: str, checkouts: int, concurrency: int, *, workers: int = 2, postgres: str = EMBEDDED,
                   **options) -> ModeRun:
    """``mode`` started fresh, benched, stopped; ``options``: those of :meth:`Bench.run`."""
    run = ModeRun(mode)
    prefix = f"bench{uuid.uuid4().hex[:8]}" if mode == "monolith-workers" and postgres != EMBEDDED else ""
    try:
        with tempfile.TemporaryDirectory(prefix=f"microshop-compare-{mode}-") as tmp:
            async with AsyncExitStack() as stack:
                try:
                    target = await stack.enter_async_context(fresh(mode_config(mode, Path(tmp), workers, postgres,
                                                                               prefix)))
                except STARTING_FAILED as exc:
                    run.skipped = f"skipped: {exc}"
                    return run
                try:
                    run.pss_idle_mb = round(sum(ProcessTrees(target.pids).pss_mb().values()), 1)
                    run.result = await run_bench(target, checkouts, concurrency, **options)
                    run.pss_after_mb = round(sum(ProcessTrees(target.pids).pss_mb().values()), 1)
                except (MicroshopError, RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
                    run.skipped = f"failed: {exc!r}"
    finally:
        if prefix:
            try:
                await drop_prefixed(prefix, postgres)
            except OSError:  # the server never answered: nothing was created there
                pass
    return run


async def compare(modes: Sequence[str], checkouts: int, concurrency: int, *, rounds: int = 1,
                  **options) -> list[ModeRun]:
    """Every mode ``rounds`` times, the order reversed every other round; the runs in the order run."""
    runs = []
    for number in range(1, rounds + 1):
        for mode in modes if number % 2 else reversed(modes):
            run = await run_mode(mode, checkouts, concurrency, **options)
            run.round = number
            runs.append(run)
    return runs


def by_mode(runs: Sequence[ModeRun]) -> dict[str, list[ModeRun]]:
    """The runs of each mode, the modes in the order they first ran."""
    grouped: dict[str, list[ModeRun]] = {}
    for run in runs:
        grouped.setdefault(run.mode, []).append(run)
    return grouped


def representative(runs: Sequence[ModeRun]) -> ModeRun:
    """The run of one mode with the median throughput (the lower middle one of an even count): what
    the plot and the sweep tables show. A mode with no figures gives its first run."""
    done = sorted((run for run in runs if run.result), key=lambda run: run.result.throughput)
    return done[(len(done) - 1) // 2] if done else runs[0]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _median_and_range(values: Sequence[float | None]) -> str:
    """One run's figure as it is; several runs': the median, then the lowest and highest."""
    present = [value for value in values if value is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return _ms(present[0])
    middle = round(statistics.median(present), 2)
    return f"{middle:g} ({min(present):g}-{max(present):g})"


def compare_table(runs: Sequence[ModeRun], checkouts: int, concurrency: int) -> Table:
    """One column per mode, one row per figure: what each mode did with the same bench, and what it
    cost (CPU per checkout in total and per process with its descendants, PSS of every process)."""
    modes = by_mode(runs)
    rounds = max(run.round for run in runs) if runs else 1
    each = f"{checkouts} checkouts at concurrency {concurrency} per mode"
    table = Table(title=f"microshop bench --compare: {each}" + (
        f", {rounds} rounds in alternating order: medians (lowest-highest)" if rounds > 1 else ""))
    table.add_column("figure", no_wrap=True)
    for mode in modes:
        table.add_column(mode, justify="right")
    done = {mode: [(run, run.result.as_dict()) for run in mode_runs if run.result]
            for mode, mode_runs in modes.items()}

    def row(label: str, value: Callable[[ModeRun, dict], float | None]) -> None:
        table.add_row(label, *(_median_and_range([value(run, figures) for run, figures in done[mode]])
                               if done[mode] else "" for mode in modes))

    def cpu_of(name: str) -> Callable[[ModeRun, dict], float | None]:
        return lambda _, figures: figures["processes"].get(name, {}).get("cpu_ms_per_checkout")

    def why_skipped(mode_runs: list[ModeRun]) -> str:
        failed = [run for run in mode_runs if run.result is None]
        if not failed:
            return ""
        reason = failed[0].skipped or "skipped"
        return reason if len(mode_runs) == 1 else f"{reason} ({len(failed)} of {len(mode_runs)} rounds)"

    if any(run.result is None for run in runs):
        table.add_row("", *(why_skipped(mode_runs) for mode_runs in modes.values()))
    row("up: ready in s", lambda run, _: run.result.ready_seconds)
    row("checkouts/s", lambda _, figures: figures["throughput_per_s"])
    for p in ("p50", "p95", "p99"):
        row(f"{p} ms", lambda _, figures, p=p: figures["latency_ms"][p])
    row("PSS MB idle", lambda run, _: run.pss_idle_mb)
    row("PSS MB after", lambda run, _: run.pss_after_mb)
    row("deferred work done in s", lambda _, figures: figures["drained_seconds"])
    row("CPU-ms/checkout", lambda _, figures: figures["processes_total"]["cpu_ms_per_checkout"])
    every = [pair for pairs in done.values() for pair in pairs]
    names = {name for _, figures in every for name in figures["processes"]}
    costliest = sorted(names, key=lambda name: -max(cpu_of(name)(run, figures) or 0.0 for run, figures in every))
    for name in costliest:
        row(f"  {name}", cpu_of(name))
    return table


def throughput_points(result: BenchResult) -> list[tuple[int, float]]:
    """(concurrency, checkouts/s): the sweep's levels and the main run's, by concurrency."""
    points = {level["concurrency"]: level["throughput_per_s"] for level in result.sweep}
    if result.rate is None:
        points.setdefault(result.concurrency, round(result.throughput, 1))
    return sorted(points.items())


def plot(runs: Sequence[ModeRun], path: Path) -> Path:
    """Two panels: throughput against concurrency per mode; the latency CDF of each mode's main run
    (of several rounds, the run with the median throughput)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib import pyplot

    runs = [representative(mode_runs) for mode_runs in by_mode(runs).values()]
    figure, (scaling, latency) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        if run.result is None:
            continue
        points = throughput_points(run.result)
        scaling.plot([c for c, _ in points], [t for _, t in points], marker="o", label=run.mode)
        distribution = cdf(run.result.latencies)
        latency.plot([value * 1000 for value, _ in distribution], [share for _, share in distribution], label=run.mode)
    scaling.set(title="throughput against concurrency", xlabel="checkouts in flight (closed loop)",
                ylabel="confirmed checkouts/s")
    scaling.set_xscale("log", base=2)
    levels = sorted({c for run in runs if run.result for c, _ in throughput_points(run.result)})
    scaling.set_xticks(levels, [str(level) for level in levels])
    scaling.minorticks_off()
    scaling.set_ylim(bottom=0)
    first = next((run.result for run in runs if run.result), None)
    how = "" if first is None else f" at {first.rate:g}/s" if first.rate else f" at concurrency {first.concurrency}"
    latency.set(title=f"latency to CONFIRMED{how} (CDF)", xlabel="ms (log scale)", ylabel="share of checkouts")
    latency.set_xscale("log")
    latency.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    latency.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    latency.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for axes in (scaling, latency):
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)
    return path

"""`microshop bench --compare`: each mode started fresh in turn (free ports, a temporary data dir),
the same bench against each, one table and one plot.

Modes: ``microservices`` (a process per service), ``monolith`` (the six services and the gateway in
one process), ``monolith-workers`` (that process forking ``workers`` children sharing its port, on
PostgreSQL: the embedded one in the mode's data dir, or an existing server under a prefix of its
own, dropped afterwards). A mode that fails to start is reported as skipped and the others still run.
"""

from __future__ import annotations

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


async def compare(modes: Sequence[str], checkouts: int, concurrency: int, **options) -> list[ModeRun]:
    return [await run_mode(mode, checkouts, concurrency, **options) for mode in modes]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def compare_table(runs: Sequence[ModeRun], checkouts: int, concurrency: int) -> Table:
    """One column per mode, one row per figure: what each mode did with the same bench, and what it
    cost (CPU per checkout in total and per process with its descendants, PSS of every process)."""
    table = Table(title=f"microshop bench --compare: {checkouts} checkouts at concurrency {concurrency} per mode")
    table.add_column("figure", no_wrap=True)
    for run in runs:
        table.add_column(run.mode, justify="right")
    done = [(run, run.result.as_dict() if run.result else None) for run in runs]

    def row(label: str, value: Callable[[ModeRun, dict], float | None]) -> None:
        table.add_row(label, *(_ms(value(run, figures)) if figures else "" for run, figures in done))

    def cpu_of(name: str) -> Callable[[ModeRun, dict], float | None]:
        return lambda _, figures: figures["processes"].get(name, {}).get("cpu_ms_per_checkout")

    if any(run.result is None for run in runs):
        table.add_row("", *(run.skipped or "skipped" if run.result is None else "" for run in runs))
    row("up: ready in s", lambda run, _: run.result.ready_seconds)
    row("checkouts/s", lambda _, figures: figures["throughput_per_s"])
    for p in ("p50", "p95", "p99"):
        row(f"{p} ms", lambda _, figures, p=p: figures["latency_ms"][p])
    row("PSS MB idle", lambda run, _: run.pss_idle_mb)
    row("PSS MB after", lambda run, _: run.pss_after_mb)
    row("deferred work done in s", lambda _, figures: figures["drained_seconds"])
    row("CPU-ms/checkout", lambda _, figures: figures["processes_total"]["cpu_ms_per_checkout"])
    names = {name for _, figures in done if figures for name in figures["processes"]}
    costliest = sorted(names, key=lambda name: -max(cpu_of(name)(run, figures) or 0.0
                                                    for run, figures in done if figures))
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
    """Two panels: throughput against concurrency per mode; the latency CDF of each mode's main run."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib import pyplot

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

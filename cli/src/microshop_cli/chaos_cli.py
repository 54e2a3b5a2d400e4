"""`microshop chaos ...` and `microshop verify`: the command-line face of chaos.py, experiment.py
and verify.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .chaos import FAULTS, Chaos, FaultRecord
from .components import admin_credentials
from .errors import MicroshopError
from .experiment import ExperimentReport, Target, fresh_system, run_experiment, verify
from .state import DataDir, read_state
from .verify import Check

console = Console()
chaos_app = typer.Typer(help="Inject faults into the running system: each reversible and logged to logs/chaos.log. "
                             "Network faults need `microshop up --chaos-proxies`.", no_args_is_help=True)
DataDirOption = typer.Option(Path(".microshop"), "--data-dir", "-d", envvar="MICROSHOP_DATA_DIR",
                             help="Where databases, logs and run state live.")
ForOption = typer.Option(None, "--for", help="Undo it after this many seconds (default: until `chaos heal`).")


def _chaos(data_dir: Path) -> Chaos:
    paths = DataDir(data_dir.resolve())
    return Chaos(paths, lambda: read_state(paths))


def _run(action: Coroutine) -> object:
    try:
        return asyncio.run(action)
    except MicroshopError as exc:
        console.print(Text(str(exc), style="bold red"), soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # a timed fault was undone by its finally block
        raise typer.Exit(130) from None


def _done(record: FaultRecord) -> None:
    console.print(f"[bold]{record.describe()}[/bold] - logged to logs/chaos.log")


@chaos_app.command()
def kill(service: str, data_dir: Path = DataDirOption,
         down_for: float = typer.Option(0.0, "--down-for", help="Keep it down this long before the restart.")) -> None:
    """SIGKILL a component (as a crash); the supervisor restarts it."""
    _done(_run(_chaos(data_dir).kill(service, down_for=down_for)))


@chaos_app.command()
def pause(service: str, seconds: float, data_dir: Path = DataDirOption) -> None:
    """SIGSTOP a component for SECONDS, then SIGCONT: a hung process that holds its connections."""
    _done(_run(_chaos(data_dir).pause(service, seconds)))


@chaos_app.command()
def latency(service: str, ms: float, jitter: float = typer.Argument(0.0), seconds: float | None = ForOption,
            data_dir: Path = DataDirOption) -> None:
    """Add MS (± JITTER) milliseconds to every answer of SERVICE, as its callers see it."""
    _done(_run(_chaos(data_dir).latency(service, ms, jitter, seconds=seconds)))


@chaos_app.command("error-rate")
def error_rate(service: str, percent: float = typer.Argument(..., min=0, max=100), seconds: float | None = ForOption,
               data_dir: Path = DataDirOption) -> None:
    """Answer PERCENT of the requests to SERVICE with 503 before they reach it."""
    _done(_run(_chaos(data_dir).error_rate(service, percent, seconds=seconds)))


@chaos_app.command()
def reset(service: str, percent: float = typer.Argument(..., min=0, max=100), seconds: float | None = ForOption,
          data_dir: Path = DataDirOption) -> None:
    """Let PERCENT of the requests reach SERVICE but reset the connection before the answer."""
    _done(_run(_chaos(data_dir).reset(service, percent, seconds=seconds)))


@chaos_app.command()
def partition(service: str, seconds: float, data_dir: Path = DataDirOption,
              mode: str = typer.Option("refuse", help="refuse: connections refused; drop: nothing gets through.")
              ) -> None:
    """Cut SERVICE off from its callers for SECONDS."""
    _done(_run(_chaos(data_dir).partition(service, seconds, mode=mode)))


@chaos_app.command("broker-restart")
def broker_restart(data_dir: Path = DataDirOption,
                   down_for: float = typer.Option(0.0, "--down-for", help="Keep NATS down this long.")) -> None:
    """SIGKILL the NATS server; the supervisor restarts it on the same JetStream store."""
    _done(_run(_chaos(data_dir).broker_restart(down_for=down_for)))


@chaos_app.command()
def heal(service: str | None = typer.Argument(None, help="One service; all when left out."),
         data_dir: Path = DataDirOption) -> None:
    """Undo every network fault (latency, error-rate, reset, partition)."""
    _done(_run(_chaos(data_dir).heal(service)))


@chaos_app.command()
def monkey(duration: float = typer.Option(60.0, "--duration", help="Seconds of faults."),
           seed: int = typer.Option(1, "--seed", help="The same seed replays the same faults."),
           faults: str = typer.Option(",".join(FAULTS), "--faults", help="Comma-separated fault kinds to draw from."),
           data_dir: Path = DataDirOption) -> None:
    """Random faults, one after another, for DURATION seconds, reproducibly."""
    console.print(f"chaos monkey: {duration:g} s, seed {seed}, faults {faults}")
    applied = _run(_chaos(data_dir).monkey(duration=duration, seed=seed, faults=faults.split(","), on_fault=_done))
    console.print(f"{len(applied)} faults applied; check the books with `microshop verify`.")


@chaos_app.command("run")
def run(duration: float = typer.Option(60.0, "--duration"), seed: int = typer.Option(1, "--seed"),
        rate: float = typer.Option(10.0, "--rate", help="Checkouts per second during the run."),
        faults: str = typer.Option(",".join(FAULTS), "--faults"),
        settle_seconds: float = typer.Option(60.0, "--settle", help="How long the system may take to go quiet."),
        as_json: bool = typer.Option(False, "--json"), data_dir: Path = DataDirOption) -> None:
    """A whole experiment: checkout load + the monkey for DURATION seconds, then `verify`. Uses the
    system running in the data dir (started with --chaos-proxies) or a fresh one. Exit 1 on any violation."""

    async def experiment() -> ExperimentReport:
        options = dict(duration=duration, seed=seed, rate=rate, faults=faults.split(","),
                       settle_seconds=settle_seconds, on_fault=None if as_json else _done)
        target = _running_target(data_dir)
        if target is not None:
            return await run_experiment(target, **options)
        async with fresh_system(chaos_seed=seed) as fresh:
            return await run_experiment(fresh, **options)

    report: ExperimentReport = _run(experiment())
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        load = report.load.summary()
        console.print(f"{len(report.faults)} faults, {load['checkouts']} checkouts in {load['seconds']} s: "
                      f"{load['outcomes']}; cancellations {load['cancellations']}; settled in "
                      f"{report.settle_seconds:.1f} s")
        print_checks(report.checks)
    if report.violations:
        raise typer.Exit(1)


def verify_command(
    data_dir: Path = DataDirOption,
    settle_seconds: float = typer.Option(60.0, "--settle", help="Wait up to this long for the system to go quiet."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check the invariants across services (stock, money, orders, e-mails, events, reports) through
    their admin APIs. Exit 1 if any is violated."""
    target = _running_target(data_dir)
    if target is None:
        console.print(f"microshop is not running ({data_dir.resolve()}).")
        raise typer.Exit(1)
    checks, waited = _run(verify(target, settle_seconds=settle_seconds))
    if as_json:
        print(json.dumps({"settle_seconds": round(waited, 1), "checks": [c.__dict__ for c in checks]}, indent=2))
    else:
        console.print(f"quiet after {waited:.1f} s")
        print_checks(checks)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def print_checks(checks: list[Check]) -> None:
    table = Table(title="microshop verify")
    for column in ("#", "invariant", "result", "figures"):
        table.add_column(column)
    for check in checks:
        result = Text("ok", style="green") if check.ok else Text(f"VIOLATED ({len(check.problems)})", style="bold red")
        table.add_row(str(check.number), check.name, result, check.figures)
    console.print(table)
    for check in checks:
        for problem in check.problems:
            console.print(Text(f"  {check.number}. {problem}", style="red"), soft_wrap=True)


def _running_target(data_dir: Path) -> Target | None:
    return Target.running(DataDir(data_dir.resolve()), *admin_credentials())

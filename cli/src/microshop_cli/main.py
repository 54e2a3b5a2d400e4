"""The ``microshop`` command: a thin Typer layer over :mod:`microshop_cli.system`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from . import control, forkserver, nats_cluster
from .chaos_cli import chaos_app, verify_command
from .components import (
    ALL_SERVICES,
    DEFAULT_PORTS,
    SERVICES,
    admin_credentials,
    check_ports_free,
    load_factory,
)
from .errors import MicroshopError
from .logtail import follow, sizes, tail_lines
from .postgres import EMBEDDED
from .scaling import parse_counts
from .state import DataDir, read_state, running_supervisor
from .status import check_all, format_uptime, measure_memory
from .system import SystemConfig, run_until_signalled

app = typer.Typer(help="Run microshop on this machine: start, supervise, inspect and stop it.",
                  no_args_is_help=True, add_completion=False)
console = Console()
app.add_typer(chaos_app, name="chaos")
app.command("verify")(verify_command)

DETACH_TIMEOUT = 180.0
# How `up --detach` hands an existing server's URL (it may hold a password) to the supervisor it
# starts: in that process's environment, which the supervisor empties at once; never in its argv.
POSTGRES_URL_ENV = "MICROSHOP_LAUNCHER_POSTGRES_URL"
DOWN_TIMEOUT = 30.0
LOG_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta",
               "bright_green", "bright_yellow", "bright_blue", "white")

DataDirOption = typer.Option(Path(".microshop"), "--data-dir", "-d", envvar="MICROSHOP_DATA_DIR",
                             help="Where databases, logs and run state live.")


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(Text(message, style="bold red"), soft_wrap=True)
    return typer.Exit(code)


@app.command()
def up(
    postgres_url: str | None = typer.Argument(
        None, metavar="URL", show_default=False,
        help="With --postgres: an existing server's URL instead of the embedded one, e.g. "
             "postgresql://postgres@127.0.0.1:5432/postgres (a role that may create roles and databases)."),
    data_dir: Path = DataDirOption,
    postgres: bool = typer.Option(False, "--postgres",
                                  help="PostgreSQL instead of SQLite files: the embedded server, run in the data "
                                       "dir, or the server at URL. A database and a role per service."),
    postgres_prefix: str = typer.Option("", "--postgres-prefix", metavar="NAME",
                                        help="With --postgres URL: name the databases and roles "
                                             "NAME_microshop_<service>, so two systems can share a server."),
    nats_cluster: bool = typer.Option(False, "--nats-cluster",
                                      help="Three NATS nodes keeping every event three times (one node may die "
                                           "and nothing acknowledged is lost) instead of one."),
    replicas: list[str] = typer.Option([], "--replicas", "-r", metavar="SERVICE=N,...",
                                       help="Start N replicas of a service (needs --postgres), e.g. "
                                            "payments=3,orders=2; change it later with `microshop scale`."),
    monolith: bool = typer.Option(False, "--monolith",
                                  help="The six services and the gateway in one process, on the gateway's port "
                                       "(the same public API at the same address); calls between them in-process."),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="With --monolith: this many processes serving its port (needs --postgres)."),
    merge_pages: bool = typer.Option(False, "--merge-pages",
                                     help="Let the kernel merge the identical memory pages of the forked "
                                          "components (KSM: Linux 6.4+, turned on by root; see docs/operations.md)."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background; stop with `microshop down`."),
    no_seed: bool = typer.Option(False, "--no-seed", help="Do not create the demo catalog."),
    port: list[str] = typer.Option([], "--port", "-p", metavar="NAME=PORT",
                                   help=f"Override a port, repeatable. Names: {', '.join(DEFAULT_PORTS)}; with "
                                        f"--nats-cluster also {', '.join(nats_cluster.PORT_NAMES)}."),
    chaos_proxies: bool = typer.Option(False, "--chaos-proxies",
                                       help="Put a fault-injection proxy in front of every service (microshop chaos)."),
    chaos_seed: int = typer.Option(0, "--chaos-seed", help="Seed of the proxies' random faults."),
    components: str | None = typer.Option(None, hidden=True, help="package.module:function giving the components."),
    supervise_only: bool = typer.Option(False, "--supervise-only", hidden=True,
                                        help="Internal: the detached supervisor (no console output)."),
) -> None:
    """Start the whole system, wait until every part is ready, seed a demo catalog, then supervise.

    `microshop up --postgres [URL]` puts the services' data in PostgreSQL instead of SQLite files;
    `microshop up --nats-cluster` runs three NATS nodes that keep every event three times."""
    if supervise_only and postgres:
        postgres_url = postgres_url or os.environ.pop(POSTGRES_URL_ENV, None)
    try:
        if postgres_url and not postgres:
            raise MicroshopError(f"up takes a URL only after --postgres (microshop up --postgres {postgres_url})")
        if postgres_prefix and not postgres_url:
            raise MicroshopError("--postgres-prefix is for an existing server: microshop up --postgres URL "
                                 "--postgres-prefix NAME")
        config = SystemConfig(data_dir=data_dir, ports=_parse_ports(port), seed=not no_seed,
                              chaos_proxies=chaos_proxies, chaos_seed=chaos_seed,
                              postgres=(postgres_url or EMBEDDED) if postgres else None,
                              postgres_prefix=postgres_prefix, nats_cluster=nats_cluster,
                              replicas=parse_counts(replicas), monolith=monolith, workers=workers,
                              merge_pages=merge_pages)
        if components:
            config.components = load_factory(components)
        paths = DataDir(config.data_dir)
        pid = running_supervisor(paths)
        if pid is not None:
            raise MicroshopError(f"microshop is already running for {paths.root} (supervisor pid {pid}); "
                                 "stop it with `microshop down` first")
        if detach:
            _up_detached(config, port, components, no_seed, replicas)
            return
        if not supervise_only:
            logging.getLogger("microshop").setLevel(logging.INFO)
            logging.getLogger("microshop").addHandler(RichHandler(console=console, show_path=False))
        on_ready = None if supervise_only else (lambda system: _print_panel(system.state()))
        asyncio.run(run_until_signalled(config, on_ready))
    except MicroshopError as exc:
        raise fail(str(exc)) from None
    if not supervise_only:
        console.print("microshop stopped.")


def _up_detached(config: SystemConfig, ports: list[str], components: str | None, no_seed: bool,
                 replicas: list[str]) -> None:
    """Start a supervisor in its own session and wait until its state file says the system runs."""
    check_ports_free(config.components(config))  # fail here, clearly, before anything starts
    paths = DataDir(config.data_dir)
    paths.create()
    command = [sys.executable, "-m", "microshop_cli.main", "up", "--data-dir", str(config.data_dir), "--supervise-only"]
    command += [argument for value in ports for argument in ("--port", value)]
    command += ["--components", components] if components else []
    command += ["--no-seed"] if no_seed else []
    command += ["--chaos-proxies", "--chaos-seed", str(config.chaos_seed)] if config.chaos_proxies else []
    command += ["--postgres"] if config.postgres else []
    command += ["--postgres-prefix", config.postgres_prefix] if config.postgres_prefix else []
    command += ["--nats-cluster"] if config.nats_cluster else []
    command += [argument for value in replicas for argument in ("--replicas", value)]
    command += ["--monolith", "--workers", str(config.workers)] if config.monolith else []
    command += ["--merge-pages"] if config.merge_pages else []
    environment = dict(os.environ)
    if config.postgres and config.postgres != EMBEDDED:
        environment[POSTGRES_URL_ENV] = config.postgres
    log_offset = paths.supervisor_log.stat().st_size if paths.supervisor_log.exists() else 0
    with paths.supervisor_log.open("ab") as log_file:
        daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True, env=environment)
    deadline = time.monotonic() + DETACH_TIMEOUT
    with console.status(f"starting microshop (supervisor pid {daemon.pid})…"):
        while True:
            state = read_state(paths) or {}
            if state.get("supervisor_pid") == daemon.pid and state.get("status") == "running":
                break
            if daemon.poll() is not None:
                raise MicroshopError(f"the supervisor exited with code {daemon.returncode} while starting:\n"
                                     + _new_log_text(paths.supervisor_log, log_offset))
            if time.monotonic() > deadline:
                daemon.terminate()
                raise MicroshopError(f"microshop was not up within {DETACH_TIMEOUT:g} s; see {paths.supervisor_log}")
            time.sleep(0.1)
    _print_panel(state)
    console.print(f"Running in the background (supervisor pid {daemon.pid}). Stop it with `microshop down`.")


def _new_log_text(path: Path, offset: int, max_lines: int = 30) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        lines = file.read().decode(errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])


def format_circuits(breakers: dict[str, str]) -> Text:
    """'closed' when all are; otherwise each target that is not, in colour."""
    if not breakers:
        return Text("-")
    troubled = {target: state for target, state in breakers.items() if state != "closed"}
    if not troubled:
        return Text("closed", style="green")
    return Text(", ".join(f"{t}: {s}" for t, s in troubled.items()),
                style="bold red" if "open" in troubled.values() else "yellow")


def format_database(database: dict | None) -> str:
    """'postgresql microshop_orders', 'sqlite orders.db'; '-' for a component without one."""
    if not database:
        return "-"
    return f"{database.get('kind', '?')} {database.get('database', '')}".strip()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # no /proc: ask the kernel directly
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@app.command()
def down(data_dir: Path = DataDirOption) -> None:
    """Stop the running system (the supervisor stops every component in reverse order)."""
    paths = DataDir(data_dir.resolve())
    pid = running_supervisor(paths)
    if pid is None:
        paths.state_file.unlink(missing_ok=True)  # left behind by a supervisor that was killed
        console.print(f"microshop is not running ({paths.root}).")
        return
    began = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    with console.status(f"stopping microshop (supervisor pid {pid})…"):
        # The lock goes when the supervisor has stopped everything; its own exit follows a moment
        # later, and `down` returns only once that happened too.
        while running_supervisor(paths) is not None or _alive(pid):
            if time.monotonic() - began > DOWN_TIMEOUT:
                raise fail(f"the supervisor (pid {pid}) did not stop within {DOWN_TIMEOUT:g} s; "
                           f"see {paths.supervisor_log}")
            time.sleep(0.1)
    console.print(f"microshop stopped in {time.monotonic() - began:.1f} s.")


@app.command()
def status(data_dir: Path = DataDirOption,
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show each component's pid, port, health, version, restarts, uptime and the circuit breakers
    of the calls it makes. Exit 1 if any is down."""
    paths = DataDir(data_dir.resolve())
    pid = running_supervisor(paths)
    state = read_state(paths) if pid is not None else None
    if state is None:
        if as_json:
            print(json.dumps({"running": False, "data_dir": str(paths.root), "components": []}))
        else:
            console.print(f"microshop is not running ({paths.root}).")
        raise typer.Exit(1)
    components = asyncio.run(check_all(state.get("processes", {}), state.get("databases", {})))
    all_ok = bool(components) and all(component.health == "ok" for component in components)
    # The fork server's memory is what its children share: part of the system's.
    server_pid = state.get("fork_server_pid")
    server_pss = measure_memory(components, server_pid)
    fork_server = {"pid": server_pid, "pss_mb": server_pss} if server_pid else None
    pss_total = round(sum(c.pss_mb or 0.0 for c in components) + ((fork_server or {}).get("pss_mb") or 0.0), 1)
    if as_json:
        print(json.dumps({
            "running": True, "status": state.get("status"), "supervisor_pid": pid, "data_dir": str(paths.root),
            "gateway_url": state.get("gateway_url"), "components": [c.as_dict() for c in components],
            "fork_server": fork_server, "merge_pages": bool(state.get("merge_pages")), "pss_mb_total": pss_total,
        }, indent=2))
    else:
        table = Table(title=f"microshop — supervisor pid {pid}, {state.get('status')} — {paths.root}",
                      caption=f"PSS in all: {pss_total:.1f} MB"
                              + (f", with the fork server's {fork_server['pss_mb'] or 0:.1f} MB" if fork_server else "")
                              + (_merging_caption() if state.get("merge_pages") else ""))
        for column in ("component", "pid", "port", "health", "version", "restarts", "uptime", "PSS MB",
                       "database", "circuits"):
            table.add_column(column, justify="right" if column in ("pid", "port", "restarts", "PSS MB") else "left")
        for component in components:
            health = Text(component.health, style="green" if component.health == "ok" else "bold red")
            table.add_row(component.name, str(component.pid or "-"), str(component.port or "-"), health,
                          component.version or "-", str(component.restarts), format_uptime(component.uptime_seconds),
                          "-" if component.pss_mb is None else f"{component.pss_mb:.1f}",
                          format_database(component.database), format_circuits(component.circuit_breakers))
        console.print(table)
    if not all_ok:
        raise typer.Exit(1)


def _merging_caption() -> str:
    return ", --merge-pages" + (" (KSM on)" if forkserver.ksm_running() else " (but KSM is off: nothing merged)")


@app.command()
def scale(
    counts: list[str] = typer.Argument(..., metavar="SERVICE=N...", help="e.g. payments=3 (or payments=1 to scale "
                                                                          "back down)."),
    data_dir: Path = DataDirOption,
) -> None:
    """Run N replicas of a service on the running system: new ones serve once ready, removed ones
    drain first (what they accepted, they finish). Needs `up --postgres`; reports and the gateway
    stay one process each."""
    paths = _running(data_dir)
    for service, count in parse_counts(counts).items():
        outcome = _control(paths, "scale", {"service": service, "replicas": count})
        console.print(f"{service}: {len(outcome['replicas'])} replica(s) ({', '.join(outcome['replicas'])}) "
                      f"in {outcome['seconds']:.1f} s")


@app.command()
def deploy(
    service: str = typer.Argument(..., help="The service to roll out."),
    version: str | None = typer.Option(None, "--version", help="The release label the new replicas show in "
                                                                 "/health and `status` (default: unchanged)."),
    env: list[str] = typer.Option([], "--env", metavar="KEY=VALUE",
                                  help="A configuration change rolled out with it, repeatable."),
    ready_timeout: float = typer.Option(60.0, "--ready-timeout", help="Seconds a new replica has to become ready."),
    data_dir: Path = DataDirOption,
) -> None:
    """Replace a service's replicas one at a time with new processes (the code installed now): start
    one, wait for /ready, drain and stop an old one. Exit 1 if a new replica never became ready:
    the replicas it replaced are then replaced back (rollback) and the service runs as before."""
    paths = _running(data_dir)
    changes = dict(item.split("=", 1) for item in env if "=" in item)
    if len(changes) != len(env):
        raise fail("--env takes KEY=VALUE")
    with console.status(f"deploying {service}…"):
        outcome = _control(paths, "deploy", {"service": service, "release": version, "env": changes,
                                             "ready_timeout": ready_timeout})
    console.print(f"{service} deployed in {outcome['seconds']:.1f} s: {', '.join(outcome['replaced'])} replaced by "
                  f"{', '.join(outcome['replicas'])}" + (f" (release {version})" if version else ""))


def _running(data_dir: Path) -> DataDir:
    paths = DataDir(data_dir.resolve())
    if running_supervisor(paths) is None:
        raise fail(f"microshop is not running ({paths.root}).")
    return paths


def _control(paths: DataDir, action: str, body: dict) -> dict:
    try:
        outcome = control.request(paths, action, body)
    except MicroshopError as exc:
        raise fail(str(exc)) from None
    if not outcome.get("ok"):
        raise fail(outcome.get("error", "the supervisor refused"))
    return outcome


@app.command()
def trace(
    target: str = typer.Argument(..., help="An order id, or a trace id (32 hex digits)."),
    url: str | None = typer.Option(None, "--url", envvar="MICROSHOP_TELEMETRY_URL",
                                   help="A telemetry receiver (default: the one `microshop up` runs in the data dir)."),
    data_dir: Path = DataDirOption,
) -> None:
    """Print a trace as a tree with timings, errors in red: every trace of an order, or one by id."""
    from .trace import trace_command

    if url is None:
        paths = _running(data_dir)
        telemetry = (read_state(paths) or {}).get("processes", {}).get("telemetry")
        if telemetry is None:
            raise fail("this system runs no telemetry receiver; pass --url")
        url = telemetry["url"]
    raise typer.Exit(trace_command(target, url))


@app.command()
def logs(
    service: str | None = typer.Argument(None, help="A component (or `supervisor`); all when left out."),
    data_dir: Path = DataDirOption,
    follow_: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until Ctrl-C."),
    lines: int = typer.Option(50, "--lines", "-n", help="How many of the last lines to show per log."),
) -> None:
    """Show the last lines of one component's log, or of all of them prefixed with their names."""
    paths = DataDir(data_dir.resolve())
    sources = _log_sources(paths)
    if service is not None:
        if service not in sources:
            raise fail(f"no log for {service!r} in {paths.logs}; known: {', '.join(sources) or 'none'}")
        sources = {service: sources[service]}
    width = max((len(name) for name in sources), default=0)
    colours = {name: LOG_COLOURS[index % len(LOG_COLOURS)] for index, name in enumerate(sources)}

    def emit(name: str, line: str) -> None:
        text = Text(line)
        if service is None:
            text = Text(f"{name:<{width}} | ", style=colours[name]) + text
        console.print(text, soft_wrap=True, highlight=False)
        sys.stdout.flush()

    # Sizes first: lines written while the tail is printed are then followed, not lost.
    printed_up_to = sizes(sources)
    for name, path in sources.items():
        for line in tail_lines(path, lines, end=printed_up_to[name]):
            emit(name, line)
    if follow_:
        try:
            follow(sources, emit, start=printed_up_to)
        except KeyboardInterrupt:
            pass


def _log_sources(paths: DataDir) -> dict[str, Path]:
    """Log files in start order (from state.json when running), then any others, then the supervisor's."""
    known = list((read_state(paths) or {}).get("processes", {})) + list(_default_order())
    found = {path.stem: path for path in sorted(paths.logs.glob("*.log"))}
    ordered = [name for name in dict.fromkeys(known) if name in found] + [name for name in found if name not in known]
    sources = {name: found[name] for name in ordered}
    if paths.supervisor_log.exists():
        sources["supervisor"] = paths.supervisor_log
    return sources


def _default_order() -> list[str]:
    return [*nats_cluster.NODES, "postgres", "mail-catcher", "card-processor", *ALL_SERVICES]


def _parse_ports(values: list[str]) -> dict[str, int]:
    ports = {}
    for value in values:
        name, _, number = value.partition("=")
        if not name or not number.isdigit() or not 0 < int(number) < 65536:
            raise MicroshopError(f"--port wants NAME=PORT (e.g. gateway=9080), not {value!r}")
        ports[name] = int(number)
    return ports


def _print_panel(state: dict) -> None:
    processes = state.get("processes", {})
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()

    def row(label: str, value: str) -> None:
        table.add_row(label, value)

    if "storefront" in processes:  # first: where a person starts
        row("Storefront", f"{processes['storefront']['url']}   (the shop in a browser)")
    if state.get("gateway_url"):
        row("Gateway", f"{state['gateway_url']}   (API docs: {state['gateway_url']}/docs)")
    if "monolith" in processes:
        row("Monolith", f"every service in one process on the gateway's port; each one's health at "
                        f"{processes['monolith']['url']}/_services/<name>/health")
    for name in SERVICES:
        replicas = [other for other, info in processes.items() if info.get("service") == name]
        if replicas:
            more = f"   ({len(replicas)} replicas: {', '.join(replicas)})" if len(replicas) > 1 else ""
            row(f"{name} docs", processes[replicas[0]]["url"] + "/docs" + more)
    if "mail-catcher" in processes:
        row("Mail catcher", f"{processes['mail-catcher']['url']}   (web UI: caught e-mail)")
    if "card-processor" in processes:
        row("Card processor", processes["card-processor"]["url"])
    if "telemetry" in processes:
        row("Telemetry", f"{processes['telemetry']['url']}   (console: service map, traces, sagas; "
                         "OTLP/HTTP at /v1/traces; microshop trace ORDER_ID)")
    nodes = [processes[node]["url"] for node in nats_cluster.NODES if node in processes]
    if len(nodes) > 1:
        row("NATS cluster", f"{', '.join(nodes)}   (every event kept {nats_cluster.REPLICAS} times)")
    elif "nats" in processes:
        row("NATS", processes["nats"]["url"])
    if "postgres" in processes:
        row("PostgreSQL", f"{processes['postgres']['url']}   (a database and a role per service)")
    if "chaos-proxy" in processes:
        row("Chaos proxies", f"{processes['chaos-proxy']['url']}/proxies   (microshop chaos --help)")
    known = {*nats_cluster.NODES, "postgres", "mail-catcher", "card-processor", "chaos-proxy", "telemetry",
             *ALL_SERVICES}
    for name, info in processes.items():
        if name not in known and not info.get("service"):
            row(name, info["url"])
    row("Admin", " / ".join(admin_credentials()))
    row("Data dir", state.get("data_dir", ""))
    ready = state.get("ready_seconds")
    title = "microshop is up" + (f" — ready in {ready:.1f} s" if ready is not None else "")
    subtitle = "microshop status · microshop logs -f · Ctrl-C or microshop down to stop"
    console.print(Panel(table, title=title, subtitle=subtitle, border_style="green", expand=False))



def _run_bench(data_dir: Path, as_json: bool, doing: str, run: Callable[[Path], Awaitable[Any]]) -> Any | None:
    """Run a benchmark against the system in ``data_dir`` (or a fresh one). With ``--json`` it
    prints the figures and returns None; otherwise it returns the result for the tables."""
    root = data_dir.resolve()
    where = "the running system" if running_supervisor(DataDir(root)) else "a fresh system in a temporary directory"
    if not as_json:
        console.print(f"{doing} against {where}...")
    try:
        result = asyncio.run(run(root))
    except (MicroshopError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
        return None
    return result


@app.command()
def bench(
    checkouts: int = typer.Option(2000, "--checkouts", "-n", min=1, help="How many checkouts to drive."),
    concurrency: int = typer.Option(32, "--concurrency", "-c", min=1, help="Checkouts in flight at once."),
    rate: float | None = typer.Option(None, "--rate", "-r", min=0.001, metavar="R",
                                      help="Open loop: start R user actions per second whatever the answers, "
                                           "latency counted from each one's intended start."),
    mix: float = typer.Option(0.0, "--mix", min=0, max=99, metavar="BROWSE_PERCENT",
                              help="A user mix: this share of the user actions are catalog reads, the rest checkouts."),
    floor: bool = typer.Option(False, "--floor", help="Also measure a bare aiohttp hop and a bare SQLite commit "
                                                      "on this machine, and read the figures against them."),
    sweep: str | None = typer.Option(None, "--sweep", metavar="1,4,16,32,64",
                                     help="Then a closed loop of -n checkouts at each of these concurrencies."),
    compare: bool = typer.Option(False, "--compare", help="Start each mode fresh in turn, bench each, print one "
                                                          "table and write a plot."),
    modes: str = typer.Option("microservices,monolith,monolith-workers", "--modes",
                              help="With --compare: which modes."),
    plot_path: Path = typer.Option(Path("bench-compare.png"), "--plot", help="With --compare: where the PNG goes."),
    workers: int = typer.Option(2, "--workers", min=2, help="With --compare: the monolith-workers mode's processes."),
    rounds: int = typer.Option(1, "--rounds", min=1,
                               help="With --compare: run the modes this many times in alternating order and give "
                                    "each figure's median and range (a shared machine's minutes differ)."),
    postgres_url: str | None = typer.Option(None, "--postgres-url",
                                            help="With --compare: monolith-workers on this existing server (under "
                                                 "a prefix of its own, dropped after) instead of an embedded one."),
    data_dir: Path = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Drive checkouts through the gateway and print throughput, latency to CONFIRMED, errors, and
    each process's memory and CPU. Uses the system running in the data dir, or starts a fresh one;
    with --compare, starts each mode fresh in turn."""
    from .bench import bench as run_bench
    from .bench_load import parse_levels

    try:
        levels = parse_levels(sweep) if sweep else []
    except ValueError as exc:
        raise fail(str(exc)) from exc
    options = {"rate": rate, "browse_percent": mix, "sweep": levels, "floor": floor}
    if compare:
        _bench_compare(checkouts, concurrency, modes, plot_path, as_json,
                       rounds=rounds, workers=workers, postgres=postgres_url or EMBEDDED, **options)
        return
    loop = f"at {rate:g} user actions/s (open loop)" if rate else f"at concurrency {concurrency}"
    result = _run_bench(data_dir, as_json, f"Driving {checkouts} checkouts {loop}",
                        lambda root: run_bench(root, checkouts, concurrency, **options))
    if result is None:
        return
    figures = result.as_dict()
    latency = figures["latency_ms"]
    summary = Table(title="microshop bench", show_header=False)
    if rate:
        summary.add_row("checkouts / rate", f"{checkouts} / {rate:g} user actions/s, open loop "
                                            f"(latency from the intended start)")
        summary.add_row("achieved rate", f"{figures['achieved_rate_per_s']} user actions/s · "
                                         f"{result.late} of {result.actions} started late (> 10 ms)")
    else:
        summary.add_row("checkouts / concurrency", f"{checkouts} / {concurrency}")
    summary.add_row("confirmed", f"{result.confirmed} in {figures['seconds']} s")
    summary.add_row("throughput", f"{figures['throughput_per_s']} confirmed checkouts/s")
    summary.add_row("latency to CONFIRMED", " · ".join(f"{p} {v} ms" for p, v in latency.items()))
    other = {k: v for k, v in result.outcomes.items() if k != "CONFIRMED"}
    summary.add_row("errors / other outcomes", ", ".join(f"{k}: {v}" for k, v in other.items()) or "none")
    total = figures["processes_total"]
    summary.add_row("CPU per checkout", f"{total['cpu_ms_per_checkout']} ms summed over every process"
                                        + (" (browsing included)" if mix else ""))
    if figures["kinds"]:
        summary.add_row("user actions", f"{result.actions} · {figures['achieved_rate_per_s']}/s")
        for kind, row in figures["kinds"].items():
            errors = ", ".join(f"{k}: {v}" for k, v in row["errors"].items()) or "no errors"
            summary.add_row(f"{kind} ({mix:g} % browse)" if kind == "browse" else kind,
                            f"{row['count']} · " + " · ".join(f"{p} {v} ms" for p, v in row["latency_ms"].items())
                            + f" · {errors}")
    if figures["floor"]:
        f, times = figures["floor"], figures["floor_multiples"]
        summary.add_row("floor: a bare aiohttp hop", f"{f['hop_us']} µs round trip · {f['hop_cpu_us']} CPU-µs "
                                                     "(client + server)")
        summary.add_row("floor: a bare SQLite commit", f"{f['commit_us']} µs · {f['commit_cpu_us']} CPU-µs "
                                                       "(INSERT + commit, WAL, synchronous=NORMAL)")
        summary.add_row("against the floor", f"CPU per checkout = {times['cpu_per_checkout_in_hop_cpu']} bare hops' "
                                             f"CPU (or {times['cpu_per_checkout_in_commit_cpu']} bare commits') · "
                                             f"p50 = {times['p50_in_hop_round_trips']} bare round trips")
    lag = figures["read_model_lag_seconds"]
    summary.add_row("reports caught up", "not within 60 s" if lag is None else f"{lag:.2f} s after the last checkout")
    drained = figures["drained_seconds"]
    summary.add_row("deferred work done", "not within 60 s (the CPU counted up to then)" if drained is None else
                    f"{drained:.2f} s after the last checkout (mail sent, reports caught up; counted in the CPU)")
    searchable = figures["trace_searchable_seconds"]
    if searchable is not None:
        summary.add_row("a trace searchable", f"{searchable:.2f} s after its checkout's answer")
    if result.ready_seconds is not None:
        summary.add_row("up: all ready in", f"{result.ready_seconds} s")
    console.print(summary)
    processes = Table(title="processes during the run and its deferred work (each with its descendants)")
    for column in ("component", "RSS MB", "CPU s", "CPU-ms/checkout", "requests"):
        processes.add_column(column, justify="left" if column == "component" else "right")
    for name, usage in figures["processes"].items():
        processes.add_row(name, f"{usage['rss_mb']:.1f}", f"{usage['cpu_s']:.2f}",
                          str(usage["cpu_ms_per_checkout"] or "-"), str(usage.get("requests", "-")))
    processes.add_row("total", f"{total['rss_mb']:.1f}", f"{total['cpu_s']:.2f}",
                      str(total["cpu_ms_per_checkout"] or "-"), "", style="bold")
    console.print(processes)
    if figures["sweep"]:
        console.print(_sweep_table(figures["sweep"]))


def _sweep_table(levels: list[dict]) -> Table:
    table = Table(title="throughput and latency against concurrency (closed loop per level)")
    for column in ("concurrency", "checkouts/s", "p50 ms", "p95 ms", "p99 ms", "CPU-ms/checkout", "errors"):
        table.add_column(column, justify="right")
    for level in levels:
        latency = level["latency_ms"]
        table.add_row(str(level["concurrency"]), f"{level['throughput_per_s']:g}",
                      *(str(latency[p]) for p in ("p50", "p95", "p99")),
                      str(level["cpu_ms_per_checkout"]), str(level["errors"]))
    return table


def _bench_compare(checkouts: int, concurrency: int, modes: str, plot_path: Path, as_json: bool, *,
                   rounds: int, **options) -> None:
    from .bench_compare import by_mode, compare, compare_table, parse_modes, plot, representative

    try:
        chosen = parse_modes(modes)
        if not as_json:
            times = f", {rounds} rounds in alternating order" if rounds > 1 else ""
            console.print(f"Starting {', '.join(chosen)} fresh in turn{times}; {checkouts} checkouts each...")
        runs = asyncio.run(compare(chosen, checkouts, concurrency, rounds=rounds, **options))
    except (MicroshopError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    written = plot(runs, plot_path)
    if as_json:
        answers = [{"round": run.round, **run.as_dict()} if rounds > 1 else run.as_dict() for run in runs]
        print(json.dumps({"modes": answers, "plot": str(written)}, indent=2))
        return
    console.print(compare_table(runs, checkouts, concurrency))
    for run in (representative(mode_runs) for mode_runs in by_mode(runs).values()):
        if run.result is not None and run.result.sweep:
            table = _sweep_table(run.result.sweep)
            table.title = f"{run.mode}: {table.title}"
            console.print(table)
    console.print(f"plot: {written}")


@app.command("bench-pages")
def bench_pages(
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Clients fetching each page at once."),
    seconds: float = typer.Option(5.0, "--seconds", "-s", min=0.1, help="How long each page is fetched."),
    data_dir: Path = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Fetch each storefront page (as a customer with a cart and a confirmed order, the admin, or a
    visitor) and print its HTML size, requests/s, p50/p95/p99 and errors, and the static assets'
    size. Uses the system running in the data dir, or starts a fresh one."""
    from .pages_bench import bench_pages as run_bench_pages

    doing = f"Fetching each storefront page with {concurrency} clients for {seconds:g} s"
    result = _run_bench(data_dir, as_json, doing, lambda root: run_bench_pages(root, concurrency, seconds))
    if result is None:
        return
    figures = result.as_dict()
    pages = Table(title=f"storefront pages: {concurrency} clients, {seconds:g} s each")
    pages.add_column("page", no_wrap=True)
    pages.add_column("as")
    for column in ("HTML bytes", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors"):
        pages.add_column(column, justify="right")
    for page in figures["pages"]:
        latency = page["latency_ms"]
        errors = ", ".join(f"{kind}: {count}" for kind, count in page["errors"].items()) or "0"
        pages.add_row(page["page"], page["who"], f"{page['html_bytes']:,}", f"{page['requests_per_s']:.1f}",
                      *(str(latency[p]) if latency[p] is not None else "-" for p in ("p50", "p95", "p99")),
                      errors)
    console.print(pages)
    static = figures["static_assets"]
    console.print("static assets: " + " + ".join(f"{name.rsplit('/', 1)[-1]} {size:,}"
                                                  for name, size in static["files"].items())
                  + f" = {static['total_bytes']:,} bytes")
    if result.ready_seconds is not None:
        console.print(f"up: all ready in {result.ready_seconds} s")


if __name__ == "__main__":  # last: every command above is registered by then
    app(prog_name="microshop")

"""Stand-ins for microshop services, so the supervisor can be tested on small real processes.

Run as a script it is one dummy service (stdlib HTTP, starts in a few tens of milliseconds):

    python cli_dummies.py NAME PORT [--events FILE] [--gate FILE] [--ignore-sigterm] [--exit-code N]

It serves GET /health (always 200), GET /ready (503 until the --gate file exists), GET /ready-polls
(how many times /ready was asked) and GET /env (its MICROSHOP_* environment). It appends
"start NAME PID" and "stop NAME PID" to the --events file so tests can see the order of starts and
stops. Imported, it builds Components that run it, plus small helpers the tests share.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from microshop_cli.components import Component


def dummy(name: str, port: int, step: int, *, events: Path | None = None, gate: Path | None = None,
          ignore_sigterm: bool = False, exit_code: int | None = None) -> Component:
    command = [sys.executable, __file__, name, str(port)]
    command += ["--events", str(events)] if events else []
    command += ["--gate", str(gate)] if gate else []
    command += ["--ignore-sigterm"] if ignore_sigterm else []
    command += ["--exit-code", str(exit_code)] if exit_code is not None else []
    return Component(name, command, port, step)


def two_step_factory(config) -> list[Component]:
    """For `microshop up --components cli_dummies:two_step_factory --port alpha=.. --port beta=..`;
    CLI_DUMMIES_EVENTS and CLI_DUMMIES_GATE (alpha's readiness gate) come from the environment."""
    events, gate = os.environ.get("CLI_DUMMIES_EVENTS"), os.environ.get("CLI_DUMMIES_GATE")
    events_path = Path(events) if events else None
    return [dummy("alpha", config.ports["alpha"], 0, events=events_path, gate=Path(gate) if gate else None),
            dummy("beta", config.ports["beta"], 1, events=events_path)]


def broken_factory(config) -> list[Component]:
    """A component that dies at start, for `up --detach` failing."""
    from microshop_cli.components import free_ports

    return [dummy("broken", free_ports(["broken"])["broken"], 0, exit_code=7)]


def read_events(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []
    return [(kind, name, int(pid)) for kind, name, pid in (line.split() for line in path.read_text().splitlines())]


def merging_pages(pid: int) -> bool:
    """Whether the kernel may merge ``pid``'s identical pages (KSM, /proc/<pid>/ksm_stat: Linux 6.4+)."""
    with open(f"/proc/{pid}/ksm_stat") as stat:
        return "ksm_merge_any: yes" in stat.read()


def process_gone(pid: int) -> bool:
    """True once the process has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc (macOS)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def get_json(url: str) -> tuple[int, object]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(url) as reply:
            return reply.status, await reply.json(content_type=None)


def broker_and_users(config) -> list[Component]:
    """For `microshop up --components cli_dummies:broker_and_users`: NATS and the real users
    service, nothing else (a real service to scale and deploy, started in a few seconds)."""
    from microshop_cli.components import default_components

    return [component for component in default_components(config) if component.name in ("nats", "users")]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m microshop_cli.main` subprocesses that use these dummies."""
    python_path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": python_path, **extra}


def _record(events: str | None, line: str) -> None:
    if events:
        with open(events, "a") as file:
            file.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("port", type=int)
    parser.add_argument("--events")
    parser.add_argument("--gate")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--exit-code", type=int)
    args = parser.parse_args()
    if args.exit_code is not None:
        print(f"dummy {args.name} failing on purpose with code {args.exit_code}", flush=True)
        sys.exit(args.exit_code)

    def on_sigterm(*_):
        _record(args.events, f"stop {args.name} {os.getpid()}")
        os._exit(0)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else on_sigterm)

    ready_polls = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self._send(200, {"status": "ok", "service": args.name, "version": "9.9.9"})
            elif self.path == "/ready":
                ready_polls[0] += 1
                ready = args.gate is None or os.path.exists(args.gate)
                self._send(200 if ready else 503, {"status": "ready" if ready else "waiting"})
            elif self.path == "/ready-polls":
                self._send(200, {"count": ready_polls[0]})
            elif self.path == "/umask":
                current = os.umask(0)
                os.umask(current)
                self._send(200, {"umask": current})
            elif self.path == "/env":
                self._send(200, {k: v for k, v in os.environ.items() if k.startswith(("MICROSHOP_", "PYTHON"))})
            else:
                self._send(404, {"detail": "not found"})

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass  # readiness polls would flood the log

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    _record(args.events, f"start {args.name} {os.getpid()}")
    print(f"dummy {args.name} listening on {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""The data directory's layout, the supervisor's state file and its lock.

The lock (``run/supervisor.lock``, flock) says whether a supervisor is alive: the kernel drops it
when that process dies, so a stale state.json or a reused pid never looks like a running system.
"""

from __future__ import annotations

import fcntl
import grp
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from microshop_chassis.broker_auth import new_passwords, server_config
from microshop_chassis.private_files import PRIVATE_DIR_MODE, make_private_dir, write_private_file
from microshop_chassis.settings import local_service_secret

from .errors import AlreadyRunningError

# As root, the embedded PostgreSQL runs as this system account (it refuses to run as root); the
# data dir then lets the account's group enter (0710), see postgres.py.
POSTGRES_ACCOUNT = "embedded_postgres"


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def state_file(self) -> Path:
        return self.run / "state.json"

    @property
    def fork_server_socket(self) -> Path:
        """Where the fork server (forkserver.py) takes the launcher's requests."""
        return self.run / "fork.sock"

    @property
    def control_socket(self) -> Path:
        """The supervisor's control socket (control.py): scale, deploy, the console's chaos page."""
        return self.run / "control.sock"

    @property
    def scrape_targets_file(self) -> Path:
        """Every service process's /metrics address in Prometheus file_sd JSON, rewritten by the
        supervisor whenever its processes change: what the telemetry component scrapes."""
        return self.run / "scrape-targets.json"

    @property
    def lock_file(self) -> Path:
        return self.run / "supervisor.lock"

    @property
    def supervisor_log(self) -> Path:
        return self.run / "supervisor.log"

    @property
    def secrets(self) -> Path:
        """Secrets of this data directory (0700, files 0600): the service secret, the broker users'
        passwords and the nats-server configuration that holds them."""
        return self.root / "secrets"

    @property
    def legacy_secrets_file(self) -> Path:
        """Where launchers before issue 8 kept the service secret."""
        return self.root / "secrets.json"

    @property
    def nats_passwords_file(self) -> Path:
        return self.secrets / "nats-passwords.json"

    @property
    def nats_config_file(self) -> Path:
        return self.secrets / "nats-server.conf"

    @property
    def postgres(self) -> Path:
        """The embedded PostgreSQL's cluster (``up --postgres``)."""
        return self.root / "postgres"

    @property
    def postgres_passwords_file(self) -> Path:
        """The password of each PostgreSQL role the launcher made (and of the embedded superuser)."""
        return self.secrets / "postgres-passwords.json"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def hold_file(self, name: str) -> Path:
        """While it exists and names a future moment, the supervisor does not restart ``name``."""
        return self.run / f"hold-{name}"

    def create(self) -> list[Path]:
        """Create the layout readable by this user only; return the directories of ours that
        existed with looser modes and were tightened to 0700 (the caller warns about them)."""
        tightened = []
        for folder in (self.root, self.logs, self.run, self.secrets):
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            status = folder.stat()
            if status.st_uid == os.getuid() and stat.S_IMODE(status.st_mode) & 0o077 & ~self._let_through(folder):
                folder.chmod(PRIVATE_DIR_MODE)
                tightened.append(folder)
        return tightened

    def _let_through(self, folder: Path) -> int:
        """Mode bits a folder of ours may have beyond 0700: the root's group-enter for the
        embedded PostgreSQL's account when it runs as that account (see POSTGRES_ACCOUNT)."""
        if folder != self.root:
            return 0
        try:
            return stat.S_IXGRP if grp.getgrgid(folder.stat().st_gid).gr_name == POSTGRES_ACCOUNT else 0
        except KeyError:
            return 0


def read_state(data_dir: DataDir) -> dict | None:
    try:
        return json.loads(data_dir.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_state(data_dir: DataDir, state: dict) -> None:
    """Readers see the old file or the new one, never half of one."""
    write_text_atomically(data_dir.state_file, json.dumps(state, indent=2) + "\n")


def service_secret(data_dir: DataDir) -> str:
    """The shared service secret: the one services started by hand on this data directory read
    too (``secrets/service-secret``, 0600, see microshop_chassis.settings); an older launcher's
    ``secrets.json`` is carried over so existing data keeps its secret."""
    target = data_dir.secrets / "service-secret"
    if not target.exists() and data_dir.legacy_secrets_file.exists():
        legacy = json.loads(data_dir.legacy_secrets_file.read_text())["service_secret"]
        make_private_dir(data_dir.secrets)
        write_private_file(target, legacy)
        data_dir.legacy_secrets_file.unlink()
    return local_service_secret(data_dir.root)


def nats_passwords(data_dir: DataDir) -> dict[str, str]:
    """A password per broker user (microshop_chassis.broker_auth), generated at first start and
    kept 0600; then the nats-server configuration with those users is (re)written, 0600 too."""
    try:
        stored = json.loads(data_dir.nats_passwords_file.read_text())
    except FileNotFoundError:
        stored = {}
    passwords = new_passwords(stored)
    make_private_dir(data_dir.secrets)
    if passwords != stored:
        write_private_file(data_dir.nats_passwords_file, json.dumps(passwords, indent=2) + "\n")
    write_private_file(data_dir.nats_config_file, server_config(passwords))
    return passwords


class SupervisorLock:
    """Held by the one live supervisor of a data directory; the file holds its pid."""

    def __init__(self, data_dir: DataDir) -> None:
        self.data_dir = data_dir
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self) -> None:
        self.data_dir.run.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.data_dir.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            pid = running_supervisor(self.data_dir)
            raise AlreadyRunningError(
                f"microshop is already running for {self.data_dir.root} (supervisor pid {pid}); "
                "stop it with `microshop down` first"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is None:
            return
        os.ftruncate(self._descriptor, 0)
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)
        self._descriptor = None


def running_supervisor(data_dir: DataDir) -> int | None:
    """The pid of the live supervisor of this data directory, or None when none runs."""
    try:
        descriptor = os.open(data_dir.lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            content = os.read(descriptor, 32).decode().strip()
            return int(content) if content.isdigit() else _pid_from_state(data_dir)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def _pid_from_state(data_dir: DataDir) -> int:
    state = read_state(data_dir) or {}
    return int(state.get("supervisor_pid") or 0)


def hold(data_dir: DataDir, name: str, seconds: float) -> None:
    """Keep ``name`` down (not restarted after it exits) for ``seconds`` from now."""
    write_text_atomically(data_dir.hold_file(name), f"{time.time() + seconds:.3f}\n")


def held_for(data_dir: DataDir, name: str) -> float:
    """Seconds ``name`` is still held down; 0 when it is not."""
    try:
        until = float(data_dir.hold_file(name).read_text())
    except (FileNotFoundError, ValueError):
        return 0.0
    return max(0.0, until - time.time())


def write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)

"""Files and folders only this OS account may read: secrets, keys, broker and database passwords.

Every file is 0600 from its first byte (created so, never chmod-ed after the fact, which would
leave a window in which it is readable by others) and appears whole: written to a draft beside it,
synced, then moved into place.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE_DIR_MODE = 0o700


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by this user only. An existing directory's
    mode is left as it is (the launcher tightens its data directory itself)."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):  # mkdir(parents=True) would give the parents the umask's mode
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)  # exist_ok: another process made it meanwhile
    return path


def write_private_file(path: Path, data: str | bytes) -> None:
    """Write ``path`` (0600), replacing what it held atomically."""
    draft = _draft(path, data)
    os.replace(draft, path)


def create_private_file(path: Path, data: str | bytes) -> bool:
    """Create ``path`` (0600) unless it exists; whether this call created it. Of several processes
    creating the same file at once, the first wins and the others leave it as it is."""
    draft = _draft(path, data)
    try:
        os.link(draft, path)
        return True
    except FileExistsError:
        return False
    finally:
        draft.unlink()


def _draft(path: Path, data: str | bytes) -> Path:
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
        file.flush()
        os.fsync(file.fileno())
    return draft

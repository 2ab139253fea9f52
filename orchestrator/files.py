"""Replacing a file atomically: a crash leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .errors import FileError, os_error

# replace_atomically's temporary files: `.<name>.` and mkstemp's eight random characters
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}")


def replace_atomically(path: Path, data: bytes, mode: int = 0o600, uid: int | None = None, gid: int | None = None) -> None:
    """Write `data` to a temporary file beside `path` with its mode (and owner), fsync it, rename it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if uid is not None or gid is not None:
                os.fchown(out.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    sync_directory(path.parent)


def sync_directory(path: Path) -> None:
    """fsync a directory, so the renames in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directory(path: Path, what: str = "the state directory", key: str = "RUMISTACK_STATE_DIR") -> None:
    """Create `path` (mode 0700) with its parents unless it is a directory already; a FileError that says
    what is in the way otherwise."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as exc:
        if path.is_symlink() and not path.exists():
            raise FileError(f"cannot create {what} {path}: it is a symbolic link to {os.readlink(path)}, which does "
                            f"not exist; create that directory, remove the link, or set {key} elsewhere") from exc
        raise FileError(f"cannot create {what} {path}: a file is in the way; move it, or set {key} "
                        "to a directory") from exc
    except OSError as exc:
        raise os_error(f"creating {what} {path}", exc) from exc


def remove_temporary(directory: Path) -> None:
    """Remove what replace_atomically leaves in `directory` when its process is killed. Only safe while no
    other process writes there (the project lock)."""
    try:
        for stale in Path(directory).iterdir():
            if TEMPORARY.fullmatch(stale.name) and (stale.is_file() or stale.is_symlink()):
                stale.unlink(missing_ok=True)
    except (FileNotFoundError, NotADirectoryError):
        pass

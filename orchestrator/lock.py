"""The project lock: one command at a time changes a project's stack.

Commands that change the stack (up, down, reload, render, a user change
pushed into a running stack) hold an exclusive flock on
<state dir>/<project>.lock. The file records which command of which
process holds it, so a second command says whom it waits for. The kernel
drops a flock when its process dies, however it dies, so a killed command
never leaves the project locked. status, logs, users and check never take
it.

Under the lock nothing else writes the project's files, so the holder
removes what a killed command left: temporary files in the state directory
here, helper containers and staged files in the volumes elsewhere
(volumes.EngineVolumes.sweep, mounted.MountedVolumes.sweep).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import Busy, os_error
from .files import make_directory, remove_temporary

# the state directory's subdirectories that hold replace_atomically's files (the user file, which has a lock
# of its own, cleans up after itself)
_WRITTEN_DIRS = ("tls", "compose")
_POLL = 0.2


def lock_file(state_dir: Path, project: str) -> Path:
    return Path(state_dir) / f"{project}.lock"


def holder(path: Path) -> str:
    """Who holds the lock, as its file says ("" if it does not say)."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


@contextmanager
def hold(state_dir: Path, project: str, command: str, timeout: int,
         notice: Callable[[str], None] = lambda line: None) -> Iterator[None]:
    """Hold the lock of `project` while the block runs, waiting up to `timeout` seconds for another holder
    (one `notice` line per holder waited for); Busy when it is still held then."""
    state_dir = Path(state_dir)
    make_directory(state_dir)
    path = lock_file(state_dir, project)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise os_error(f"opening the lock file {path} of project {project}", exc) from exc
    try:
        _acquire(fd, path, project, timeout, notice)
        _record(fd, f"`rumistack {command}` (pid {os.getpid()}) since {time.strftime('%H:%M:%S')}")
        for name in _WRITTEN_DIRS:
            remove_temporary(state_dir / name)
        yield
        _record(fd, "")
    finally:
        os.close(fd)  # releases the lock


def _acquire(fd: int, path: Path, project: str, timeout: int, notice: Callable[[str], None]) -> None:
    deadline = time.monotonic() + timeout
    told: str | None = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        recorded = holder(path)  # "" for a moment while a new holder writes its record
        who = recorded or told or "another rumistack command"
        if time.monotonic() >= deadline:
            raise Busy(f"{who} still holds the lock of project {project} after {timeout} s of waiting: let it "
                       "finish (or stop it) and run this again, or wait longer with RUMISTACK_LOCK_TIMEOUT")
        if who != told:
            notice(f"waiting for {who}, which holds the lock of project {project} (up to {timeout} s, "
                   "RUMISTACK_LOCK_TIMEOUT)")
            told = who
        time.sleep(_POLL)


def _record(fd: int, who: str) -> None:
    """Say who holds the lock, for a command that waits; on a full disk it goes unsaid."""
    try:
        os.ftruncate(fd, 0)
        if who:
            os.pwrite(fd, who.encode() + b"\n", 0)
    except OSError:
        pass

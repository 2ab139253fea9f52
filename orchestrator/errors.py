"""Named errors: the CLI turns each into one line and an exit code."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class RumistackError(Exception):
    """An error a self-hoster can act on; its message says what to do."""

    exit_code = 1


class ConfigError(RumistackError):
    """A configuration value is invalid."""

    exit_code = 2


class UserError(RumistackError):
    """A user name, password or the user file is not usable."""

    exit_code = 2


class DockerUnavailable(RumistackError):
    """The Docker engine cannot be reached."""

    exit_code = 3


class StackError(RumistackError):
    """Creating, starting or checking the stack failed."""

    exit_code = 4


class CertificateError(RumistackError):
    """A certificate or key cannot be used: unreadable, mismatched, expired, or for another name."""

    exit_code = 2


class Busy(RumistackError):
    """Another rumistack command holds the project's lock, and kept it past RUMISTACK_LOCK_TIMEOUT."""

    exit_code = 5


class FileError(RumistackError):
    """A file or directory rumistack reads or writes cannot be used: the disk is full or read-only, a file
    is in the way of a directory, a permission is missing."""

    exit_code = 6


class BackupError(RumistackError):
    """A backup cannot be written, or an archive cannot be restored (damaged, or it would replace data)."""

    exit_code = 7


class Unexpected(RumistackError):
    """A failure rumistack has no name for: a bug to report (run with --debug for the traceback)."""

    exit_code = 70  # EX_SOFTWARE


_ADVICE = {
    errno.ENOSPC: "free some space on that disk",
    errno.EDQUOT: "free some space or raise the disk quota",
    errno.EROFS: "the file system is mounted read-only: remount it writable or set RUMISTACK_STATE_DIR to a "
                 "directory on a writable one",
    errno.EACCES: "check the owner and permissions of that path, or run rumistack as its owner",
    errno.EPERM: "check the owner and permissions of that path, or run rumistack as its owner",
    errno.EEXIST: "something that is not a directory is in the way: move it, or set RUMISTACK_STATE_DIR elsewhere",
    errno.ENOTDIR: "a file is in the way of a directory: move it, or set RUMISTACK_STATE_DIR elsewhere",
    errno.EISDIR: "a directory is where a file should be: move it",
    errno.ENOENT: "check that the path exists",
    errno.ELOOP: "a symbolic link loops: fix or remove it",
    errno.EIO: "the disk reports an input/output error: check it (dmesg) before going on",
}


def os_error(doing: str, exc: OSError, advice: str | None = None) -> FileError:
    """A FileError for `exc` met while `doing` ("writing the user file .rumistack/htpasswd"): the OS's words
    and what to do."""
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in doing else ""
    words = exc.strerror or str(exc) or exc.__class__.__name__
    hint = advice or _ADVICE.get(exc.errno or 0, "check that path, then run the command again")
    return FileError(f"{doing} failed: {words}{where}; {hint}")


@contextmanager
def doing(what: str, advice: str | None = None) -> Iterator[None]:
    """Name an OSError raised inside as a FileError while `what` was being done."""
    try:
        yield
    except OSError as exc:
        raise os_error(what, exc, advice) from exc

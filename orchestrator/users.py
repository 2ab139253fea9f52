"""The user database: an htpasswd file of bcrypt (`$2y$`) hashes.

Every change runs under an exclusive lock and replaces the file atomically
(temporary file, fsync, rename), so concurrent changes all land and a crash
leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from passlib.apache import HtpasswdFile

from .errors import UserError, doing
from .files import make_directory, replace_atomically

MAX_NAME_BYTES = 255
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; longer passwords are refused, never cut
MIN_GOOD_PASSWORD = 12


class WeakPassword(UserWarning):
    """The password is accepted but short."""


def check_name(name: str) -> str:
    if not name:
        raise UserError("the user name is empty")
    if ":" in name:
        raise UserError(f"user name {name!r} contains ':', which the htpasswd format uses as separator")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"user name {name!r} contains a control character")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UserError(f"user name is longer than {MAX_NAME_BYTES} bytes of UTF-8")
    return name


def check_password(password: str) -> str:
    if not password:
        raise UserError("the password is empty")
    if "\0" in password:
        raise UserError("the password contains a NUL character, which bcrypt cannot take: choose another")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise UserError(
            f"the password is {len(password.encode())} bytes long; bcrypt uses at most "
            f"{MAX_PASSWORD_BYTES} bytes, so choose a shorter one"
        )
    if len(password) < MIN_GOOD_PASSWORD:
        warnings.warn(f"the password is shorter than {MIN_GOOD_PASSWORD} characters", WeakPassword, stacklevel=2)
    return password


class UserFile:
    """The htpasswd file at `path` (mode 0600, its directory 0700)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def names(self) -> list[str]:
        return sorted(self._read().users())

    def content(self) -> bytes:
        """The file as it is now (empty when it does not exist yet)."""
        return self._read().to_string()

    def add(self, name: str, password: str) -> None:
        check_name(name)
        check_password(password)
        with self._change() as users:
            if name in users.users():
                raise UserError(f"user {name!r} exists already; use `rumistack passwd {name}` to change the password")
            users.set_password(name, password)

    def set_password(self, name: str, password: str) -> None:
        check_name(name)
        check_password(password)
        with self._change() as users:
            if name not in users.users():
                raise UserError(f"there is no user {name!r}; add one with `rumistack adduser {name}`")
            users.set_password(name, password)

    def delete(self, name: str) -> None:
        check_name(name)  # no such user can exist, and libpass refuses to look for one with a ValueError
        with self._change() as users:
            if not users.delete(name):
                raise UserError(f"there is no user {name!r}")

    def _read(self) -> HtpasswdFile:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise UserError(f"cannot read the user file {self.path}: {exc.strerror}") from None
        try:
            return HtpasswdFile.from_string(data, default_scheme="bcrypt")
        except ValueError as exc:
            raise UserError(f"the user file {self.path} is damaged: {exc}; fix or remove that line") from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's exclusive lock (a separate .lock file, so renames keep it)."""
        make_directory(self.path.parent)
        lock = self.path.with_name(self.path.name + ".lock")
        with doing(f"opening the user file's lock {lock}"):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def _change(self) -> Iterator[HtpasswdFile]:
        with self.locked():
            # under the lock, a temporary file can only be left by a writer that died
            with doing(f"removing a temporary file a stopped command left beside {self.path}"):
                for stale in self.path.parent.glob(f".{self.path.name}.*"):
                    stale.unlink(missing_ok=True)
            users = self._read()
            yield users
            with doing(f"writing the user file {self.path} (it is unchanged)"):
                replace_atomically(self.path, users.to_string())  # mode 0600

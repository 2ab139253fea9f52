"""RumiTalk's secrets, generated once and kept.

JWT_SECRET and JWT_REFRESH_SECRET sign logins, CREDS_KEY and CREDS_IV
encrypt the API keys users store, MEILI_MASTER_KEY guards the search index.
A new value would log everyone out or make stored credentials unreadable, so
a value, once written, is never replaced: a later run only adds what is
missing. The file is `secrets.env` in the state directory, mode 0600.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from dotenv import dotenv_values

from .errors import UserError, doing, os_error
from .files import make_directory

# name -> generator, from the cryptographically secure `secrets` module
GENERATORS: dict[str, Callable[[], str]] = {
    "JWT_SECRET": lambda: secrets.token_hex(32),
    "JWT_REFRESH_SECRET": lambda: secrets.token_hex(32),
    "CREDS_KEY": lambda: secrets.token_hex(32),  # 32 bytes: AES-256 key
    "CREDS_IV": lambda: secrets.token_hex(16),  # 16 bytes: AES block
    "MEILI_MASTER_KEY": lambda: secrets.token_urlsafe(32),
}


def load_secrets(state_dir: Path) -> dict[str, str]:
    """The secrets, generating (and saving) any that do not exist yet."""
    path = Path(state_dir) / "secrets.env"
    make_directory(path.parent)
    with doing(f"opening RumiTalk's secrets {path}"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            existing = {k: v for k, v in dotenv_values(path).items() if v}
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text: restore it from a backup (its values sign the logins "
                            "and encrypt stored credentials)") from None
        missing = {name: make() for name, make in GENERATORS.items() if name not in existing}
        if missing:
            _append(fd, path, "".join(f"{name}={value}\n" for name, value in missing.items()).encode())
        return {**existing, **missing}
    finally:
        os.close(fd)


def _append(fd: int, path: Path, data: bytes) -> None:
    """Append `data` whole, or not at all: a half-written secret would be kept for good."""
    size = os.fstat(fd).st_size
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(28, os.strerror(28))  # a short write: the disk is full
        os.fsync(fd)
    except OSError as exc:
        with doing(f"undoing a partial write of {path}"):
            os.ftruncate(fd, size)
        raise os_error(f"writing new secrets into {path} (it is unchanged)", exc) from exc

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

from .errors import UserError

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
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            existing = {k: v for k, v in dotenv_values(path).items() if v}
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        missing = {name: make() for name, make in GENERATORS.items() if name not in existing}
        if missing:
            os.write(fd, "".join(f"{name}={value}\n" for name, value in missing.items()).encode())
            os.fsync(fd)
        return {**existing, **missing}
    finally:
        os.close(fd)

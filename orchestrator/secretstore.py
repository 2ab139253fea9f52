"""RumiTalk's secrets, generated once and kept.

JWT_SECRET and JWT_REFRESH_SECRET sign logins, CREDS_KEY and CREDS_IV
encrypt the API keys users store, MEILI_MASTER_KEY guards the search index.
A new value would log everyone out or make stored credentials unreadable, so
a value, once written, is never replaced: a later run only adds what is
missing. The file is `secrets.env` in the state directory, mode 0600.

Moving an existing install in, RumiTalk's settings file brings its secrets
along (`offered`): they are recorded instead of generated ones. One that
differs from a value already recorded is refused: choosing between them is
the self-hoster's call, never rumistack's.
"""

from __future__ import annotations

import fcntl
import re
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


# what a new value of each secret breaks
_CONSEQUENCE = {
    "JWT_SECRET": "a new one logs everyone out",
    "JWT_REFRESH_SECRET": "a new one logs everyone out",
    "CREDS_KEY": "a new one makes every API key users stored unreadable",
    "CREDS_IV": "a new one makes every API key users stored unreadable",
    "MEILI_MASTER_KEY": "a new one locks RumiTalk out of its search index until it is rebuilt",
}


def _quoted(value: str) -> str:
    """A value as dotenv reads it back unchanged: plain when it is a token (as generated ones are), else in
    single quotes, which dotenv takes as they are."""
    return value if re.fullmatch(r"[A-Za-z0-9_.-]+", value) else f"'{value}'"


def load_secrets(state_dir: Path, offered: dict[str, str] | None = None) -> dict[str, str]:
    """The secrets: those recorded, then the `offered` ones (from RumiTalk's settings file), then new ones
    for any still missing, each recorded once. UserError if an offered one differs from the recorded one."""
    path = Path(state_dir) / "secrets.env"
    make_directory(path.parent)
    with doing(f"opening RumiTalk's secrets {path}"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            existing = {k: v for k, v in dotenv_values(path, interpolate=False).items() if v}
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text: restore it from a backup (its values sign the logins "
                            "and encrypt stored credentials)") from None
        for name, value in sorted((offered or {}).items()):
            if name in existing and existing[name] != value:
                raise UserError(
                    f"{name} in RumiTalk's settings file differs from the one this stack already uses ({path}); "
                    f"{_CONSEQUENCE[name]}. To keep the stack's, remove {name} from the settings file; to use the "
                    f"file's, remove its line from {path}")
        missing = {name: (offered or {}).get(name) or make() for name, make in GENERATORS.items() if name not in existing}
        for name, value in missing.items():
            if "'" in value or "\n" in value:
                raise UserError(f"{name} in RumiTalk's settings file has a quote or a line break, which cannot be "
                                "kept safely: choose another value")
        if missing:
            _append(fd, path, "".join(f"{name}={_quoted(value)}\n" for name, value in missing.items()).encode())
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

"""Config and users into place: render the nginx configuration, check it with
`nginx -t`, and write it and the user file into the stack's volumes.

One function for every way in: `rumistack up` and `rumistack render` reach
the volumes through the Docker engine (volumes.EngineVolumes); the compose
bundle's tools container has them mounted (mounted.MountedVolumes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .config import Config
from .errors import UserError
from .render import render
from .spec import AUTH_VOLUME, CONFIG_VOLUME, NGINX_GID
from .users import UserFile
from .volumes import File

# the volumes publish writes into
WRITTEN_VOLUMES = (CONFIG_VOLUME, AUTH_VOLUME)


class Volumes(Protocol):
    """The stack's volumes, by their name in spec.py ("nginx-config", ...)."""

    def exists(self, volume: str) -> bool: ...

    def check(self, files: dict[str, str]) -> None:
        """Raise StackError when nginx refuses the config files."""

    def write(self, volumes: dict[str, dict[str, File]]) -> None:
        """{volume: {path in the volume: File}}; each file replaced atomically."""


def require_users(users: UserFile) -> None:
    if not users.names():
        raise UserError("there are no users yet, so no one could log in: add one with `rumistack adduser NAME`")


def users_file(users: UserFile) -> File:
    # the nginx workers (uid/gid 101) read it; nobody else in the container can
    return File(users.content(), mode=0o640, uid=0, gid=NGINX_GID)


def publish(config: Config, users: UserFile, volumes: Volumes, step: Callable[[str], None] = lambda message: None) -> None:
    """Render, check and write the config and the users."""
    require_users(users)
    files = render(config)
    step("checking the nginx configuration with nginx -t")
    volumes.check(files)
    step("writing the configuration and the users into their volumes")
    with users.locked():
        volumes.write({
            CONFIG_VOLUME: {name: File(text.encode()) for name, text in files.items()},
            AUTH_VOLUME: {"htpasswd": users_file(users)},
        })


def push_users(users: UserFile, volumes: Volumes) -> bool:
    """Copy the user file into the auth volume if there is one; True if it did.

    nginx opens the file on every request, so the change applies at once.
    """
    if not volumes.exists(AUTH_VOLUME):
        return False
    with users.locked():
        volumes.write({AUTH_VOLUME: {"htpasswd": users_file(users)}})
    return True

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

    def publish_user_file(self, volume: str, file: File) -> None:
        """`file` as the volume's user file: written as htpasswd-<hash of its
        content>, then the link htpasswd switched to it in one rename
        (volumes.publish_user_file)."""


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
    volumes.write({CONFIG_VOLUME: {name: File(text.encode()) for name, text in files.items()}})
    publish_users(users, volumes)


def publish_users(users: UserFile, volumes: Volumes) -> None:
    """The user file into the auth volume, behind the link nginx resolves on
    every request. nginx keys its cache of verified credentials by the file
    the link points to, so from the next request on no verification from
    before counts: a removed user or an old password is refused at once."""
    with users.locked():
        volumes.publish_user_file(AUTH_VOLUME, users_file(users))


def push_users(users: UserFile, volumes: Volumes) -> bool:
    """Publish the user file if the stack has an auth volume; True if it did.
    The change applies at once, without a reload (publish_users)."""
    if not volumes.exists(AUTH_VOLUME):
        return False
    publish_users(users, volumes)
    return True

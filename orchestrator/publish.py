"""Config, certificate and users into place: decide the certificate nginx
serves (https.prepare), render the nginx configuration for it, check both
with `nginx -t`, and write them and the user file into the stack's volumes.

One way for every way in: `rumistack up` and `rumistack render` reach the
volumes through the Docker engine (volumes.EngineVolumes); the compose
bundle's tools container has them mounted (mounted.MountedVolumes). `up`
and `reload` use checked_config and write what changed themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from . import https, tls
from .config import Config
from .errors import UserError
from .render import render
from .spec import AUTH_VOLUME, CONFIG_VOLUME, NGINX_GID, TLS_VOLUME
from .tls import Certificate
from .users import UserFile
from .volumes import File

# the volumes publish writes into
WRITTEN_VOLUMES = (CONFIG_VOLUME, AUTH_VOLUME, TLS_VOLUME)


class Volumes(Protocol):
    """The stack's volumes, by their name in spec.py ("nginx-config", ...)."""

    def exists(self, volume: str) -> bool: ...

    def check(self, files: dict[str, str], others: dict[str, File]) -> None:
        """Raise StackError when nginx refuses the config files, with `others` (absolute paths: the
        certificate) in place."""

    def read(self, wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, bytes]]:
        """{volume: {path: content}}: the files of `wanted` ({volume: paths}) that exist."""

    def nginx_version(self) -> tuple[int, int, int] | None:
        """The version of the nginx that runs the config, None if it cannot be known here."""

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


def config_files(files: dict[str, str]) -> dict[str, File]:
    return {name: File(text.encode()) for name, text in files.items()}


def checked_config(config: Config, certificate: Certificate | None, volumes: Volumes,
                   step: Callable[[str], None]) -> tuple[https.Served, dict[str, str]]:
    """Decide what nginx serves over HTTPS (`certificate`: https.local's), render the config for it,
    and check both with `nginx -t`; StackError if nginx refuses them."""
    served = https.prepare(config, certificate, tls.now(), volumes)
    files = render(config, served.facts)
    step("checking the nginx configuration with nginx -t")
    volumes.check(files, served.check_files())
    return served, files


def publish(config: Config, users: UserFile, volumes: Volumes, step: Callable[[str], None] = lambda message: None) -> None:
    """Render, check and write the config, the certificate and the users."""
    require_users(users)
    served, files = checked_config(config, https.local(config, tls.now()), volumes, step)
    step("writing the configuration and the users into their volumes")
    volumes.write({CONFIG_VOLUME: config_files(files), **served.volume_files()})
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

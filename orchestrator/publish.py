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
    with users.locked():
        volumes.write({
            CONFIG_VOLUME: config_files(files),
            AUTH_VOLUME: {"htpasswd": users_file(users)},
            **served.volume_files(),
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

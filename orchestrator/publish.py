"""Config, certificate and users into place, one way for `up`, `reload`
and `render`: decide the certificate nginx serves (https.prepare), render
the nginx configuration for it, check both with `nginx -t`, and only then
write them and the user file into the stack's volumes. A config nginx
refuses is never written, so the running nginx keeps its good one.

The volumes are reached through the Docker engine (volumes.EngineVolumes)
or mounted in the compose bundle's tools container (mounted.MountedVolumes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import https, tls
from .appsettings import AppSettings
from .config import Config
from .errors import UserError
from .layout import NGINX_GID, RUMITALK_UID
from .render import config_id, render
from .spec import ACME_VOLUME, AUTH_VOLUME, CONFIG_VOLUME, RUMITALK_CONFIG_VOLUME, TLS_VOLUME
from .tls import Certificate
from .users import UserFile
from .volumes import File, Volumes

# the volumes publish writes into
WRITTEN_VOLUMES = (CONFIG_VOLUME, AUTH_VOLUME, TLS_VOLUME, RUMITALK_CONFIG_VOLUME, ACME_VOLUME)


@dataclass(frozen=True)
class Published:
    served: https.Served  # the certificate nginx serves, and whether to ask the ACME server
    config_id: str  # of the config in the config volume now (render.config_id)
    config_changed: bool  # not the config the running nginx had loaded: it needs a reload


def require_users(users: UserFile) -> None:
    if not users.names():
        raise UserError("there are no users yet, so no one could log in: add one with `rumistack adduser NAME`")


def users_file(users: UserFile) -> File:
    # the nginx workers (uid/gid 101) read it; nobody else in the container can
    return File(users.content(), mode=0o640, uid=0, gid=NGINX_GID)


def publish(config: Config, volumes: Volumes, certificate: Certificate | None, step: Callable[[str], None],
            users: UserFile | None = None, loaded: str | None = None, app: AppSettings | None = None) -> Published:
    """Render and check the config for `certificate` (https.local's), then write the config (unless
    it is `loaded`, the config_id a running nginx has), the certificate, RumiTalk's YAML from `app`,
    and `users`, each when given. StackError if nginx refuses the config: then nothing is written."""
    if users is not None:
        require_users(users)
    served = https.prepare(config, certificate, tls.now(), volumes)
    files = render(config, served.facts)
    step("checking the nginx configuration with nginx -t")
    volumes.check(files, served.check_files())
    wanted = config_id(config, served.facts)  # with HTTPS, it names the certificate too
    changed = wanted != loaded
    writes = {**served.volume_files()}
    if changed:
        writes[CONFIG_VOLUME] = {name: File(text.encode()) for name, text in files.items()}
    if app is not None and app.config_name:
        # under its content's name, so it never changes under a running RumiTalk; it may hold keys
        writes[RUMITALK_CONFIG_VOLUME] = {app.config_name: File(app.config_yaml, 0o600, RUMITALK_UID, RUMITALK_UID)}
    if writes:
        step(f"writing {', '.join(sorted(writes))} into {'its volume' if len(writes) == 1 else 'their volumes'}")
        volumes.write(writes)
    if users is not None:
        publish_users(users, volumes)
    return Published(served, wanted, changed)


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

"""Render the nginx configuration from the Jinja2 templates in nginx/.

Output is deterministic: the same Config gives the same bytes, so a hash of
the files tells whether anything changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .config import Config

CONF_DIR = "/etc/rumistack/nginx"  # the config volume, mounted read-only in nginx
# the auth volume, likewise; short on purpose: nginx resolves the user file
# link in it on every request, at one readlink a path component
AUTH_DIR = "/rumistack-auth"
USER_FILE = "htpasswd"  # in AUTH_DIR: a link to the current htpasswd-<hash> (volumes.publish_user_file)
# a tmpfs on the nginx container (spec.py) for the cache of verified
# credentials and the verifier's socket; nginx creates both inside it, so
# without it nginx does not start
AUTH_TMPFS = "/run/rumistack"
MAIN_FILE = "nginx.conf"
HEALTH_PORT = 8081
UPSTREAM = "rumitalk:3080"


@dataclass(frozen=True)
class Exemption:
    path: str
    exact: bool
    why: str


# the one list of paths that skip basic auth
EXEMPTIONS: tuple[Exemption, ...] = (
    Exemption("/api/", False, "rumitalk's api: its own bearer-token auth guards it"),
    Exemption("/manifest.webmanifest", True, "browsers fetch the manifest without credentials"),
    Exemption("/health", True, "health checks; safari re-prompts for credentials here"),
)

_TEMPLATES = {
    MAIN_FILE: "nginx.conf.j2",
    "snippets/basic-auth.conf": "snippets/basic-auth.conf.j2",
    "snippets/auth-verifier.conf": "snippets/auth-verifier.conf.j2",
    "snippets/proxy.conf": "snippets/proxy.conf.j2",
}


def _environment() -> Environment:
    root = resources.files("rumistack.nginx")
    return Environment(
        loader=FileSystemLoader(str(root)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(config: Config) -> dict[str, str]:
    """The config files, by path relative to the config directory."""
    env = _environment()
    context = {
        "domain": config.domain,
        "realm": config.realm,
        "upstream": UPSTREAM,
        "conf_dir": CONF_DIR,
        "health_port": HEALTH_PORT,
        "user_file": f"{AUTH_DIR}/{USER_FILE}",
        "auth_tmpfs": AUTH_TMPFS,
        "auth_cache_seconds": config.auth_cache_seconds,
        "exemptions": EXEMPTIONS,
    }
    return {name: env.get_template(template).render(context) for name, template in sorted(_TEMPLATES.items())}


def digest(files: dict[str, str | bytes]) -> str:
    """A short hash of a set of files, names included."""
    h = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        data = content.encode() if isinstance(content, str) else content
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()[:16]

"""Render the nginx configuration from the Jinja2 templates in nginx/.

Output is deterministic: the same Config gives the same bytes. The config
carries a hash of itself (config_id), which nginx reports on loopback, so
rumistack can tell which config a running nginx has loaded.
"""

from __future__ import annotations

import hashlib
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


_TEMPLATES = {
    MAIN_FILE: "nginx.conf.j2",
    "snippets/basic-auth.conf": "snippets/basic-auth.conf.j2",
    "snippets/auth-verifier.conf": "snippets/auth-verifier.conf.j2",
    "snippets/proxy.conf": "snippets/proxy.conf.j2",
    "snippets/streaming.conf": "snippets/streaming.conf.j2",
}
_STRICT_TEMPLATES = {"snippets/strict-api.conf": "snippets/strict-api.conf.j2"}
CURRENT_USER_PATH = "/api/user"  # rumitalk's current-user endpoint: 200 for a valid bearer token


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
    return _render(config, config_id(config))


def config_id(config: Config) -> str:
    """A hash of the config rendered for `config`; nginx reports the one it has loaded."""
    h = hashlib.sha256()
    for name, text in sorted(_render(config, "").items()):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:16]


def _render(config: Config, config_id: str) -> dict[str, str]:
    env = _environment()
    exempt = config.exemptions
    exact = {e.path for e in exempt if e.exact}
    context = {
        "domain": config.domain,
        "realm": config.realm,
        "upstream": UPSTREAM,
        "conf_dir": CONF_DIR,
        "health_port": HEALTH_PORT,
        "user_file": f"{AUTH_DIR}/{USER_FILE}",
        "auth_tmpfs": AUTH_TMPFS,
        "auth_cache_seconds": config.auth_cache_seconds,
        "strict_api": config.strict_api,
        "token_cache_seconds": config.token_cache_seconds,
        "current_user_path": CURRENT_USER_PATH,
        "config_id": config_id,
        "stream_timeout": config.stream_timeout,
        "max_upload": config.max_upload,
        "exemptions": exempt,
        # a prefix exemption's path without its slash stays protected, unless exempted itself
        "guarded": {e.path: e.path[:-1] not in exact for e in exempt if not e.exact},
    }
    templates = _TEMPLATES | (_STRICT_TEMPLATES if config.strict_api else {})
    return {name: env.get_template(template).render(context) for name, template in sorted(templates.items())}

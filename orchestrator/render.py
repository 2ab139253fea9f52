"""Render the nginx configuration from the Jinja2 templates in nginx/.

Output is deterministic: the same Config gives the same bytes, so a hash of
the files tells whether anything changed.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from . import acme
from .config import Config
from .tls import TLS_DIR

CONF_DIR = "/etc/rumistack/nginx"  # the config volume, mounted read-only in nginx
AUTH_DIR = "/etc/rumistack/auth"  # the auth volume, likewise
MAIN_FILE = "nginx.conf"
HEALTH_PORT = 8081
UPSTREAM = "rumitalk:3080"


_TEMPLATES = {
    MAIN_FILE: "nginx.conf.j2",
    "snippets/basic-auth.conf": "snippets/basic-auth.conf.j2",
    "snippets/proxy.conf": "snippets/proxy.conf.j2",
}
_TLS_TEMPLATES = {"snippets/tls.conf": "snippets/tls.conf.j2"}
_ACME_TEMPLATES = {"snippets/acme-challenge.conf": "snippets/acme-challenge.conf.j2"}

# nginx 1.25.1 made http/2 a directive of its own (`http2 on;`) and deprecated
# `listen ... http2`, which older ones need
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)


def _environment() -> Environment:
    root = resources.files("rumistack.nginx")
    return Environment(
        loader=FileSystemLoader(str(root)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(config: Config, *, hsts: bool = False, nginx_version: tuple[int, ...] | None = None) -> dict[str, str]:
    """The config files, by path relative to the config directory.

    `hsts`: the certificate is publicly trusted (see tls.publicly_trusted).
    `nginx_version`: of the image that runs the config; unknown, http/2 is
    switched on the way every version understands (1.25.1 and later warn).
    """
    env = _environment()
    exempt = config.exemptions
    exact = {e.path for e in exempt if e.exact}
    context = {
        "domain": config.domain,
        "realm": config.realm,
        "upstream": UPSTREAM,
        "conf_dir": CONF_DIR,
        "auth_dir": AUTH_DIR,
        "health_port": HEALTH_PORT,
        "exemptions": exempt,
        # a prefix exemption's path without its slash stays protected, unless exempted itself
        "guarded": {e.path: e.path[:-1] not in exact for e in exempt if not e.exact},
        "tls": config.https,
        "acme": config.tls == "acme",
        "tls_dir": TLS_DIR,
        "webroot": acme.WEBROOT,
        "hsts": hsts,
        "http2_directive": nginx_version is not None and tuple(nginx_version) >= HTTP2_DIRECTIVE_SINCE,
        "https_port_suffix": "" if config.https_port == 443 else f":{config.https_port}",
    }
    templates = dict(_TEMPLATES)
    if config.https:
        templates.update(_TLS_TEMPLATES)
    if config.tls == "acme":
        templates.update(_ACME_TEMPLATES)
    return {name: env.get_template(template).render(context) for name, template in sorted(templates.items())}


def digest(files: dict[str, str | bytes]) -> str:
    """A short hash of a set of files, names included."""
    h = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        data = content.encode() if isinstance(content, str) else content
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()[:16]

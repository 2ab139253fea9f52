"""Render the nginx configuration from the Jinja2 templates in nginx/.

Output is deterministic: the same Config and TlsFacts give the same bytes.
The config carries a hash of itself (config_id), which nginx reports on
loopback, so rumistack can tell which config a running nginx has loaded; with
HTTPS that includes which certificate (its hash is in snippets/tls.conf).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .config import Config
from .layout import (
    AUTH_DIR,
    AUTH_TMPFS,
    CONF_DIR,
    EDGE_FILE,
    EDGE_UPSTREAM,
    EVENTS_SOCKET,
    HEALTH_PORT,
    MAIN_FILE,
    NGINX_RUN_DIR,
    SWARM_SUBNET,
    TLS_DIR,
    UPSTREAM,
    USER_FILE,
    VERIFIER_DIR,
    VERIFIER_HEARTBEAT,
    VERIFY_SOCKET,
    WEBROOT,
)


_TEMPLATES = {
    MAIN_FILE: "nginx.conf.j2",
    "snippets/basic-auth.conf": "snippets/basic-auth.conf.j2",
    "snippets/auth-verifier.conf": "snippets/auth-verifier.conf.j2",
    "snippets/proxy.conf": "snippets/proxy.conf.j2",
    "snippets/streaming.conf": "snippets/streaming.conf.j2",
    "snippets/security-headers.conf": "snippets/security-headers.conf.j2",
}
_STRICT_TEMPLATES = {"snippets/strict-api.conf": "snippets/strict-api.conf.j2"}
_TRUSTED_PROXIES_TEMPLATES = {"snippets/trusted-proxies.conf": "snippets/trusted-proxies.conf.j2"}
CURRENT_USER_PATH = "/api/user"  # rumitalk's current-user endpoint: 200 for a valid bearer token
_TLS_TEMPLATES = {"snippets/tls.conf": "snippets/tls.conf.j2"}
_ACME_TEMPLATES = {"snippets/acme-challenge.conf": "snippets/acme-challenge.conf.j2"}

# nginx 1.25.1 made http/2 a directive of its own (`http2 on;`) and deprecated
# `listen ... http2`, which older ones need
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
# nginx 1.27.3 resolves an upstream server's name again by itself (`server ... resolve`)
UPSTREAM_RESOLVE_SINCE = (1, 27, 3)


@dataclass(frozen=True)
class TlsFacts:
    """What the HTTPS part of the config depends on besides Config (https.Served finds it out)."""

    # a hash of the certificate and key nginx serves: a new certificate is a new
    # config, so its reload is confirmed by config_id like any other
    certificate_id: str = ""
    hsts: bool = False  # the certificate is publicly trusted (tls.publicly_trusted)
    # of the image that runs the config; unknown, http/2 is switched on the way
    # every version understands (1.25.1 and later warn)
    nginx_version: tuple[int, int, int] | None = None


def _environment() -> Environment:
    root = resources.files("rumistack.nginx")
    return Environment(
        loader=FileSystemLoader(str(root)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(config: Config, tls: TlsFacts = TlsFacts(), swarm: bool = False) -> dict[str, str]:
    """The config files, by path relative to the config directory; `swarm`: for a Docker Swarm stack
    (RumiTalk's tasks found by DNS, the user file a secret)."""
    return _render(config, tls, config_id(config, tls, swarm), swarm)


def config_id(config: Config, tls: TlsFacts = TlsFacts(), swarm: bool = False) -> str:
    """A hash of the config rendered for `config` and `tls`; nginx reports the one it has loaded."""
    h = hashlib.sha256()
    for name, text in sorted(_render(config, tls, "", swarm).items()):
        h.update(name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:16]


def _render(config: Config, tls: TlsFacts, config_id: str, swarm: bool) -> dict[str, str]:
    env = _environment()
    # on a swarm, nginx 1.27.3 and later follow RumiTalk's tasks in the upstream block (with keepalive);
    # older ones only through a variable in proxy_pass
    upstream_resolve = swarm and tls.nginx_version is not None and tls.nginx_version >= UPSTREAM_RESOLVE_SINCE
    by_variable = swarm and not upstream_resolve
    exempt = config.exemptions
    exact = {e.path for e in exempt if e.exact}
    context = {
        "domain": config.domain,
        "realm": config.realm,
        "upstream": UPSTREAM,
        "swarm": swarm,
        "upstream_resolve": upstream_resolve,
        "rumitalk_by_variable": by_variable,
        "rumitalk": "http://$rumitalk_upstream" if by_variable else "http://rumitalk",
        # on a swarm the user file is a secret at that path; here a link to a file named by its content
        "user_file_pattern": f"{AUTH_DIR}/{USER_FILE}" + ("" if swarm else "-[0-9a-f]{16}"),
        "conf_dir": CONF_DIR,
        "health_port": HEALTH_PORT,
        "user_file": f"{AUTH_DIR}/{USER_FILE}",
        "auth_tmpfs": AUTH_TMPFS,
        "verify_socket": VERIFY_SOCKET,
        # the verifier's heartbeat files, but for the second nginx appends (auth-verifier.conf)
        "verifier_heartbeat": f"{VERIFIER_DIR}/{VERIFIER_HEARTBEAT}",
        "events_socket": EVENTS_SOCKET,
        "run_dir": NGINX_RUN_DIR,
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
        "tls": config.https,
        "acme": config.tls == "acme",
        "tls_dir": TLS_DIR,
        "webroot": WEBROOT,
        "certificate_id": tls.certificate_id,
        "hsts": tls.hsts,
        "http2_directive": tls.nginx_version is not None and tls.nginx_version >= HTTP2_DIRECTIVE_SINCE,
        "https_port_suffix": "" if config.https_port == 443 else f":{config.https_port}",
        "trusted_proxies": config.trusted_proxies,
        # on a swarm the edge (render_edge) passes the connections on, with the PROXY protocol
        "edge_subnet": SWARM_SUBNET,
    }
    templates = dict(_TEMPLATES)
    if config.https:
        templates.update(_TLS_TEMPLATES)
    if config.tls == "acme":
        templates.update(_ACME_TEMPLATES)
    if config.strict_api:
        templates.update(_STRICT_TEMPLATES)
    if config.trusted_proxies:
        templates.update(_TRUSTED_PROXIES_TEMPLATES)
    return {name: env.get_template(template).render(context) for name, template in sorted(templates.items())}


def render_edge(config: Config) -> dict[str, str]:
    """The config of a swarm's edge (nginx/edge.conf.j2), by its path in the config directory: the ports
    nginx serves, passed on to nginx's tasks. Nothing else of `config` reaches it, so no user or config
    change restarts the edge."""
    ports = (80, 443) if config.https else (80,)
    context = {"ports": ports, "upstream": EDGE_UPSTREAM, "run_dir": NGINX_RUN_DIR, "health_port": HEALTH_PORT}
    return {EDGE_FILE: _environment().get_template("edge.conf.j2").render(context)}

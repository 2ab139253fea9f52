"""The stack, defined once: services, images, volumes, health checks, names.

`rumistack up` builds containers from this, and compose/docker-compose.yml is
generated from it (rumistack.compose); nothing else describes the stack.
A value that comes from .env reaches a service through the `setting` hook
of `services`: `up` takes the value itself, the compose renderer writes
`${KEY:-default}` so that compose reads it from .env.
Names follow Docker Compose's (`<project>_<volume>`, `<project>_default`), and
volumes and the network carry compose's labels too, so both ways of running
the stack share them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import acme
from .appsettings import AppSettings
from .builds import Build
from .config import Config
from .layout import (
    ACME_CONFIG_DIR,
    AUTH_DIR,
    AUTH_TMPFS,
    AUTH_TMPFS_OPTIONS,
    CERTBOT_TMPFS,
    CERTBOT_TMPFS_OPTIONS,
    CONF_DIR,
    EDGE_RUN,
    HEALTH_PORT,
    NGINX_GID,
    NGINX_RUN,
    NGINX_RUN_DIR,
    NGINX_RUN_OPTIONS,
    RUMITALK_CONFIG_DIR,
    RUMITALK_LOG_DIR,
    TLS_DIR,
    USER_FILE,
    VERIFIER_ARGS,
    VERIFIER_DIR,
    VERIFIER_HEARTBEAT,
    VERIFIER_PROGRAM,
    VERIFIER_UID,
    WEBROOT,
)

LABEL_PROJECT = "rumistack.project"
LABEL_SERVICE = "rumistack.service"
LABEL_SPEC = "rumistack.spec"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_VOLUME = "com.docker.compose.volume"
COMPOSE_NETWORK = "com.docker.compose.network"

CONFIG_VOLUME = "nginx-config"
AUTH_VOLUME = "nginx-auth"
TLS_VOLUME = "tls"  # the certificate nginx serves
ACME_VOLUME = "acme"  # certbot's account, certificates and renewal settings
WEBROOT_VOLUME = "acme-webroot"  # http-01 challenge files
RUMITALK_CONFIG_VOLUME = "rumitalk-config"  # RumiTalk's YAML, named by its content
EDGE_CONFIG_VOLUME = "edge-config"  # on a swarm: the edge's config (a Swarm config there, as nginx's are)
# the services that hold data: `up` with a new image for one of them writes a backup first
DATA_SERVICES = ("mongodb", "meilisearch")
MONGO_VOLUME = "mongodb-data"
MEILI_VOLUME = "meili-data"  # the search index, rebuildable from MongoDB
UPLOADS_VOLUME = "rumitalk-uploads"
IMAGES_VOLUME = "rumitalk-images"  # avatars and generated images
# the verifier's sockets. A volume, since a container's own tmpfs cannot be shared; mounted by nginx and
# the verifier only, so nothing else on the stack's network can ask the verifier directly and so guess
# passwords past nginx's rate limits. In memory (tmpfs), owned by the verifier, reachable by nginx's group
VERIFIER_VOLUME = "auth-verifier"
# the volumes that are not plain directories on the engine's disk: the local driver's options of each
VOLUME_OPTIONS = {
    VERIFIER_VOLUME: {"type": "tmpfs", "device": "tmpfs",
                      "o": f"size=1m,mode=0770,uid={VERIFIER_UID},gid={NGINX_GID},noexec,nosuid,nodev"},
}

REDIS_URI = "redis://redis:6379"  # on a swarm, RumiTalk's replicas share state there
RESTART = "unless-stopped"  # every service's restart policy
# every container: no process gains privileges it did not start with (setuid binaries, file capabilities)
NO_NEW_PRIVILEGES = "no-new-privileges:true"
# nginx's master runs as root with only these: bind ports 80 and 443, switch its workers to the `nginx`
# user, and hand them the temporary and cache directories it creates on its tmpfs at each start (chown).
# The edge's (a swarm's) too
NGINX_CAPABILITIES = ("CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID")
LOG_FILES = 3  # rotated log files kept per container, each up to RUMISTACK_LOG_MAX_SIZE


@dataclass(frozen=True)
class Mount:
    volume: str
    target: str
    read_only: bool = False
    # an empty volume gets a copy of what the image has at `target`, unless no_copy
    no_copy: bool = False


@dataclass(frozen=True)
class Tmpfs:
    target: str
    options: str  # mount options, as for `docker run --tmpfs`


@dataclass(frozen=True)
class Port:
    host_ip: str  # (or what a renderer writes for the setting: see `services`)
    host_port: int | str
    container_port: int


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]
    # seconds. Once healthy, a check every 30 s: an exec in every container every 2 s, all day, is load
    # and log noise on a small home server
    interval: int = 30
    # while starting: engines of API 1.44 (Docker 25) and later check this often in the start period; on
    # older ones `up` runs the same check itself until it passes (stack._health)
    start_interval: int = 2
    timeout: int = 3
    retries: int = 3
    start_period: int = 60


@dataclass(frozen=True)
class Logging:
    """Docker's json-file driver with rotation: at most `max_files` files of `max_size` each."""
    max_size: str  # (or what a renderer writes for the setting: see `services`)
    max_files: int = LOG_FILES
    driver: str = "json-file"  # `rumistack logs` and `docker logs` read it

    def options(self) -> dict[str, str]:
        return {"max-size": self.max_size, "max-file": str(self.max_files)}


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    healthcheck: HealthCheck
    command: tuple[str, ...] | None = None
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[Tmpfs, ...] = ()
    ports: tuple[Port, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    depends_on: tuple[str, ...] = ()  # started and healthy before this one starts
    stop_signal: str | None = None
    entrypoint: tuple[str, ...] | None = None
    # another service whose process namespace this one joins (docker's --pid container:...)
    pid_namespace: str | None = None
    logging: Logging | None = None  # None: the engine's default driver, unbounded
    security_opt: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()  # ("ALL",): none of Docker's default capabilities ...
    cap_add: tuple[str, ...] = ()  # ... but these
    read_only: bool = False  # a read-only root filesystem (it writes to its volumes and tmpfs only)
    user: str | None = None  # uid:gid its process runs as (None: the image's)
    sysctls: tuple[tuple[str, str], ...] = ()  # kernel settings of its own network namespace
    build: Build | None = None  # an image rumistack builds (builds.py); `image` is its tag

    def digest(self, *facts: str) -> str:
        """A hash of everything that defines this service's container: its fields, and the facts
        outside them it is made from (the image's id; the id of the container whose process
        namespace it joins, which docker binds at create)."""
        data = json.dumps([asdict(self), *facts], sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:16]


# verified credentials are cached here, in memory only: never on a disk
AUTH_TMPFS_MOUNT = Tmpfs(AUTH_TMPFS, AUTH_TMPFS_OPTIONS)

# a setting's value as a renderer writes it, by its Config field name
Setting = Callable[[str], Any]


def _wget(url: str) -> tuple[str, ...]:
    return ("CMD", "wget", "-q", "-O", "/dev/null", url)


def _tls_mounts(config: Config) -> tuple[Mount, ...]:
    """nginx reads the certificate, and the http-01 challenges (served in acme mode only; mounted in
    every HTTPS mode, so that one nginx service of the compose bundle is nginx in each)."""
    if not config.https:
        return ()
    return (Mount(TLS_VOLUME, TLS_DIR, read_only=True, no_copy=True),
            Mount(WEBROOT_VOLUME, WEBROOT, read_only=True, no_copy=True))


def _certbot(config: Config, setting: Setting) -> Service:
    """Gets the first certificate once nginx answers, renews it by itself and reloads nginx (see
    orchestrator/acme.py)."""
    return Service(
        name="certbot",
        image=setting("certbot_image"),
        entrypoint=("sh", "-c"),
        command=acme.service_command(setting("domain"), setting("acme_directory"), setting("acme_email")),
        mounts=(Mount(ACME_VOLUME, ACME_CONFIG_DIR), Mount(WEBROOT_VOLUME, WEBROOT), Mount(TLS_VOLUME, TLS_DIR)),
        environment=acme.environment(config),
        depends_on=("nginx",),
        pid_namespace="nginx",  # nginx's master is its pid 1: the deploy hook reloads it with SIGHUP
        # no capability: it writes its volumes and signals nginx's master, all as root like them
        cap_drop=("ALL",),
        read_only=True,
        tmpfs=tuple(Tmpfs(path, CERTBOT_TMPFS_OPTIONS) for path in CERTBOT_TMPFS),
        # healthy once its first attempt is over (the certificate kept, obtained or not): so `up` and
        # compose's `up --wait` return with the certificate in place, or with certbot's reason in its log
        healthcheck=HealthCheck(acme.HEALTHCHECK, start_period=acme.FIRST_ATTEMPT_SECONDS),
    )


def _verifier(setting: Setting, swarm: bool) -> Service:
    """Checks credentials with bcrypt for nginx, off nginx's event loop (see orchestrator/verifier.py). On a
    swarm the user file is a secret of the task, not a link to content-named files."""
    build = Build("rumistack/verifier", ("verifier.Dockerfile", "verifier.py"), "verifier.Dockerfile",
                  setting("tools_base_image"))
    return Service(
        name="verifier",
        image=build.tag,
        build=build,
        entrypoint=VERIFIER_PROGRAM,
        command=("serve", *VERIFIER_ARGS, "--user-file", f"{AUTH_DIR}/{USER_FILE}",
                 *(("--fixed-user-file",) if swarm else ()), "--heartbeat", VERIFIER_HEARTBEAT),
        mounts=(Mount(VERIFIER_VOLUME, VERIFIER_DIR), Mount(AUTH_VOLUME, AUTH_DIR, read_only=True, no_copy=True)),
        user=f"{VERIFIER_UID}:{NGINX_GID}",
        cap_drop=("ALL",),  # a plain user, that needs no capability
        read_only=True,
        healthcheck=HealthCheck(("CMD", *VERIFIER_PROGRAM, "health", *VERIFIER_ARGS), start_period=10),
        # nginx's auth events queue on its socket: the kernel's default of 10 datagrams loses a burst's
        # (nginx drops an event it cannot send, and the counters come out short)
        sysctls=(("net.unix.max_dgram_qlen", "4096"),),
    )


def _ports(config: Config, setting: Setting) -> tuple[Port, ...]:
    """The ports that take traffic: nginx's on one host, the edge's on a swarm."""
    return ((Port(setting("bind_address"), setting("http_port"), 80),)
            + ((Port(setting("bind_address"), setting("https_port"), 443),) if config.https else ()))


def _edge(config: Config, setting: Setting) -> Service:
    """On a swarm, on each node that takes traffic: holds the node's ports (one task at a time can) and
    passes every connection on to an nginx task, with the PROXY protocol (render.render_edge), so nginx's
    tasks hold no port and can be replaced start-first, without a refused connection."""
    return Service(
        name="edge",
        image=setting("nginx_image"),
        command=EDGE_RUN,
        mounts=(Mount(EDGE_CONFIG_VOLUME, CONF_DIR, read_only=True, no_copy=True),),
        tmpfs=(Tmpfs(NGINX_RUN_DIR, NGINX_RUN_OPTIONS),),
        cap_drop=("ALL",),
        cap_add=NGINX_CAPABILITIES,
        read_only=True,
        ports=_ports(config, setting),
        depends_on=("nginx",),
        healthcheck=HealthCheck(_wget(f"http://127.0.0.1:{HEALTH_PORT}/edge-health"), start_period=10),
        stop_signal="SIGQUIT",  # graceful: connections in flight finish
        # its keepalive probes to nginx's tasks (proxy_socket_keepalive): the first after 30 s of quiet,
        # then every 10 s, and after 3 unanswered the connection ends; the kernel's default waits two hours
        sysctls=(("net.ipv4.tcp_keepalive_time", "30"), ("net.ipv4.tcp_keepalive_intvl", "10"),
                 ("net.ipv4.tcp_keepalive_probes", "3")),
    )


def _derived(config: Config, secrets: dict[str, str], app: AppSettings, swarm: bool) -> dict[str, str]:
    """RumiTalk's variables the stack sets, and its secrets; appsettings.DERIVED names each variable, so
    that the settings file cannot set it too (a test holds the two in step)."""
    derived = {
        "HOST": "0.0.0.0",
        "PORT": "3080",
        "MONGO_URI": config.mongo_uri or "mongodb://mongodb:27017/RumiTalk",
        "DOMAIN_CLIENT": config.browser_url.rstrip("/"),
        "DOMAIN_SERVER": config.browser_url.rstrip("/"),
        "SEARCH": "true" if config.search else "false",
        # nginx puts the one client address it trusts last in X-Forwarded-For (behind trusted
        # proxies too: it takes theirs with real_ip), so RumiTalk trusts exactly one hop, nginx
        "TRUST_PROXY": "1",
    }
    if config.search:
        derived["MEILI_HOST"] = "http://meilisearch:7700"
    if swarm:
        # RumiTalk's replicas share their streams, rate limits and bans in Redis (in process memory otherwise)
        derived["USE_REDIS"] = "true"
        derived["REDIS_URI"] = REDIS_URI
    if app.config_name:
        derived["CONFIG_PATH"] = f"{RUMITALK_CONFIG_DIR}/{app.config_name}"
    names = ("JWT_SECRET", "JWT_REFRESH_SECRET", "CREDS_KEY", "CREDS_IV") + (("MEILI_MASTER_KEY",) if config.search else ())
    return {**derived, **{name: secrets[name] for name in names}}


def services(config: Config, secrets: dict[str, str], app: AppSettings = AppSettings(),
             setting: Setting | None = None, swarm: bool = False) -> tuple[Service, ...]:
    """The services, each after the ones it depends on; `app`: RumiTalk's own settings, its environment's
    and YAML's. `setting` gives what to write for a value of .env, by its Config field (default: the value).
    `swarm`: the stack for Docker Swarm, whose RumiTalk runs in several replicas (rumistack.swarm)."""
    setting = setting or (lambda name: getattr(config, name))
    stack: list[Service] = []
    if not config.mongo_uri:
        stack.append(Service(
            name="mongodb",
            image=setting("mongo_image"),
            mounts=(Mount(MONGO_VOLUME, "/data/db"),),
            healthcheck=HealthCheck(("CMD", "mongosh", "--quiet", "--eval", "db.adminCommand('ping').ok")),
        ))
    if config.search:
        stack.append(Service(
            name="meilisearch",
            image=setting("meili_image"),
            environment=(("MEILI_MASTER_KEY", secrets["MEILI_MASTER_KEY"]), ("MEILI_NO_ANALYTICS", "true")),
            mounts=(Mount(MEILI_VOLUME, "/meili_data"),),
            healthcheck=HealthCheck(_wget("http://127.0.0.1:7700/health")),
        ))
    if swarm:
        stack.append(Service(
            name="redis",
            image=setting("redis_image"),
            # RumiTalk's shared state is short-lived (streams in flight, rate limits): memory only
            command=("redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"),
            healthcheck=HealthCheck(("CMD", "redis-cli", "ping")),
        ))
    environment = {**app.environment, **_derived(config, secrets, app, swarm)}
    stack.append(Service(
        name="rumitalk",
        image=setting("rumitalk_image"),
        environment=tuple(sorted(environment.items())),
        mounts=(
            Mount(UPLOADS_VOLUME, "/app/uploads"),
            Mount(IMAGES_VOLUME, "/app/client/public/images"),
            Mount("rumitalk-logs", RUMITALK_LOG_DIR),
            Mount(RUMITALK_CONFIG_VOLUME, RUMITALK_CONFIG_DIR, read_only=True, no_copy=True),
        ),
        depends_on=tuple(s.name for s in stack),
        healthcheck=HealthCheck(_wget("http://127.0.0.1:3080/health")),
    ))
    stack.append(_verifier(setting, swarm))
    stack.append(Service(
        name="nginx",
        image=setting("nginx_image"),
        command=NGINX_RUN,
        mounts=(
            Mount(CONFIG_VOLUME, CONF_DIR, read_only=True, no_copy=True),
            Mount(AUTH_VOLUME, AUTH_DIR, read_only=True, no_copy=True),
            Mount(VERIFIER_VOLUME, VERIFIER_DIR),
        ) + _tls_mounts(config),
        tmpfs=(AUTH_TMPFS_MOUNT, Tmpfs(NGINX_RUN_DIR, NGINX_RUN_OPTIONS)),
        cap_drop=("ALL",),
        cap_add=NGINX_CAPABILITIES,
        read_only=True,
        # on a swarm the edge holds the ports instead
        ports=() if swarm else _ports(config, setting),
        # nginx resolves RumiTalk's name when it starts; it starts without the verifier too (and then
        # serves only exemptions and what it has verified before), but waits for it when both start
        depends_on=("rumitalk", "verifier"),
        healthcheck=HealthCheck(_wget(f"http://127.0.0.1:{HEALTH_PORT}/nginx-health"), start_period=10),
        stop_signal="SIGQUIT",  # graceful: finish requests in flight
    ))
    if swarm:
        stack.append(_edge(config, setting))
    if config.tls == "acme":
        stack.append(_certbot(config, setting))
    # every container's log is bounded: a busy or attacked instance cannot fill the disk
    logging = Logging(setting("log_max_size"))
    return tuple(replace(service, logging=logging, security_opt=(NO_NEW_PRIVILEGES,)) for service in stack)


def volumes(stack: tuple[Service, ...]) -> tuple[str, ...]:
    """Every named volume the services mount."""
    return tuple(sorted({m.volume for s in stack for m in s.mounts}))


def container_name(config: Config, service: str) -> str:
    return f"{config.project}-{service}"


def volume_name(config: Config, volume: str) -> str:
    return f"{config.project}_{volume}"


def network_name(config: Config) -> str:
    return f"{config.project}_default"


def labels(project: str, **extra: str) -> dict[str, str]:
    return {LABEL_PROJECT: project, **{f"rumistack.{k}": v for k, v in extra.items()}}


def volume_labels(project: str, volume: str) -> dict[str, str]:
    """rumistack's label and compose's, so `docker compose up` takes the volume as its own."""
    return {**labels(project), COMPOSE_PROJECT: project, COMPOSE_VOLUME: volume}


def network_labels(project: str) -> dict[str, str]:
    """rumistack's label and compose's, so `docker compose up` takes the network as its own."""
    return {**labels(project), COMPOSE_PROJECT: project, COMPOSE_NETWORK: "default"}

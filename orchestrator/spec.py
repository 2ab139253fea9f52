"""The stack, defined once: services, images, volumes, health checks, names.

`rumistack up` builds containers from this; nothing else describes the stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from . import acme
from .config import Config
from .render import AUTH_DIR, CONF_DIR, HEALTH_PORT, MAIN_FILE
from .tls import TLS_DIR

LABEL_PROJECT = "rumistack.project"
LABEL_SERVICE = "rumistack.service"
LABEL_SPEC = "rumistack.spec"

CONFIG_VOLUME = "nginx-config"
AUTH_VOLUME = "nginx-auth"
VOLUMES = (CONFIG_VOLUME, AUTH_VOLUME)
TLS_VOLUME = "tls"  # the certificate nginx serves
ACME_VOLUME = "acme"  # certbot's account, certificates and renewal settings
WEBROOT_VOLUME = "acme-webroot"  # http-01 challenge files

NGINX_UID = 101  # the `nginx` user of the official images; its workers read the user file
NGINX_GID = 101


@dataclass(frozen=True)
class Mount:
    volume: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: int
    container_port: int


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]
    interval: int = 2  # seconds
    timeout: int = 3
    retries: int = 3
    start_period: int = 60


@dataclass(frozen=True)
class Service:
    name: str
    image: str
    healthcheck: HealthCheck
    command: tuple[str, ...] | None = None
    mounts: tuple[Mount, ...] = ()
    ports: tuple[Port, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    stop_signal: str | None = None
    entrypoint: tuple[str, ...] | None = None
    # another service whose process namespace this one joins (docker's --pid container:...)
    pid_namespace: str | None = None
    # facts outside the container definition that require a new container
    # when they change (the rendered config, for nginx)
    inputs: tuple[tuple[str, str], ...] = field(default=())

    def digest(self, image_id: str) -> str:
        """A hash of everything that defines this service's container."""
        data = json.dumps([asdict(self), image_id], sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:16]


def _wget(url: str) -> tuple[str, ...]:
    return ("CMD", "wget", "-q", "-O", "/dev/null", url)


def volumes(config: Config) -> tuple[str, ...]:
    """The named volumes the stack uses, by TLS mode."""
    if not config.https:
        return VOLUMES
    if config.tls == "acme":
        return VOLUMES + (TLS_VOLUME, ACME_VOLUME, WEBROOT_VOLUME)
    return VOLUMES + (TLS_VOLUME,)


def _tls_mounts(config: Config) -> tuple[Mount, ...]:
    """nginx reads the certificate, and in acme mode the http-01 challenges."""
    if not config.https:
        return ()
    if config.tls == "acme":
        return (Mount(TLS_VOLUME, TLS_DIR, True), Mount(WEBROOT_VOLUME, acme.WEBROOT, True))
    return (Mount(TLS_VOLUME, TLS_DIR, True),)


def _certbot(config: Config) -> Service:
    """Renews the certificate by itself and reloads nginx (see orchestrator/acme.py)."""
    return Service(
        name="certbot",
        image=config.certbot_image,
        entrypoint=("sh", "-c"),
        command=(acme.RENEW_LOOP,),
        mounts=(Mount(ACME_VOLUME, acme.CONFIG_DIR, False), Mount(WEBROOT_VOLUME, acme.WEBROOT, False),
                Mount(TLS_VOLUME, TLS_DIR, False)),
        environment=acme.environment(config),
        pid_namespace="nginx",  # nginx's master is its pid 1: the deploy hook reloads it with SIGHUP
        healthcheck=HealthCheck(("NONE",)),  # it sleeps most of the time; `status` shows the certificate's end
    )


def services(config: Config, config_digest: str) -> tuple[Service, ...]:
    """The services in start order: RumiTalk first, so nginx resolves its name; certbot after nginx,
    whose process namespace it joins."""
    rumitalk = Service(
        name="rumitalk",
        image=config.rumitalk_image,
        healthcheck=HealthCheck(_wget("http://127.0.0.1:3080/health")),
    )
    nginx = Service(
        name="nginx",
        image=config.nginx_image,
        command=("nginx", "-c", f"{CONF_DIR}/{MAIN_FILE}", "-g", "daemon off;"),
        mounts=(Mount(CONFIG_VOLUME, CONF_DIR, True), Mount(AUTH_VOLUME, AUTH_DIR, True)) + _tls_mounts(config),
        ports=(Port(config.bind_address, config.http_port, 80),)
        + ((Port(config.bind_address, config.https_port, 443),) if config.https else ()),
        healthcheck=HealthCheck(_wget(f"http://127.0.0.1:{HEALTH_PORT}/nginx-health"), start_period=10),
        stop_signal="SIGQUIT",  # graceful: finish requests in flight
        inputs=(("nginx-config", config_digest),),
    )
    return (rumitalk, nginx) + ((_certbot(config),) if config.tls == "acme" else ())


def container_name(config: Config, service: str) -> str:
    return f"{config.project}-{service}"


def volume_name(config: Config, volume: str) -> str:
    return f"{config.project}_{volume}"


def network_name(config: Config) -> str:
    return f"{config.project}_default"


def labels(config: Config, **extra: str) -> dict[str, str]:
    return {LABEL_PROJECT: config.project, **{f"rumistack.{k}": v for k, v in extra.items()}}

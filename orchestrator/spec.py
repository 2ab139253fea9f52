"""The stack, defined once: services, images, volumes, health checks, names.

`rumistack up` builds containers from this, and compose/docker-compose.yml is
generated from it (rumistack.compose); nothing else describes the stack.
Names follow Docker Compose's (`<project>_<volume>`, `<project>_default`), and
volumes and the network carry compose's labels too, so both ways of running
the stack share them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from .config import Config
from .render import AUTH_DIR, CONF_DIR, HEALTH_PORT, MAIN_FILE

LABEL_PROJECT = "rumistack.project"
LABEL_SERVICE = "rumistack.service"
LABEL_SPEC = "rumistack.spec"
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_VOLUME = "com.docker.compose.volume"
COMPOSE_NETWORK = "com.docker.compose.network"

CONFIG_VOLUME = "nginx-config"
AUTH_VOLUME = "nginx-auth"
VOLUMES = (CONFIG_VOLUME, AUTH_VOLUME)

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
    restart: str = "unless-stopped"
    # services that must be started before this one (services() lists them earlier)
    depends_on: tuple[str, ...] = ()
    # facts outside the container definition that require a new container
    # when they change (the rendered config, for nginx)
    inputs: tuple[tuple[str, str], ...] = field(default=())

    def digest(self, image_id: str) -> str:
        """A hash of everything that defines this service's container."""
        data = json.dumps([asdict(self), image_id], sort_keys=True).encode()
        return hashlib.sha256(data).hexdigest()[:16]


def _wget(url: str) -> tuple[str, ...]:
    return ("CMD", "wget", "-q", "-O", "/dev/null", url)


def services(config: Config, config_digest: str) -> tuple[Service, ...]:
    """The services in start order: RumiTalk first, so nginx resolves its name."""
    rumitalk = Service(
        name="rumitalk",
        image=config.rumitalk_image,
        healthcheck=HealthCheck(_wget("http://127.0.0.1:3080/health")),
    )
    nginx = Service(
        name="nginx",
        image=config.nginx_image,
        command=("nginx", "-c", f"{CONF_DIR}/{MAIN_FILE}", "-g", "daemon off;"),
        mounts=(Mount(CONFIG_VOLUME, CONF_DIR, True), Mount(AUTH_VOLUME, AUTH_DIR, True)),
        ports=(Port(config.bind_address, config.http_port, 80),),
        healthcheck=HealthCheck(_wget(f"http://127.0.0.1:{HEALTH_PORT}/nginx-health"), start_period=10),
        stop_signal="SIGQUIT",  # graceful: finish requests in flight
        depends_on=("rumitalk",),
        inputs=(("nginx-config", config_digest),),
    )
    return (rumitalk, nginx)


def container_name(config: Config, service: str) -> str:
    return f"{config.project}-{service}"


def volume_name(config: Config, volume: str) -> str:
    return f"{config.project}_{volume}"


def network_name(config: Config) -> str:
    return f"{config.project}_default"


def labels(config: Config, **extra: str) -> dict[str, str]:
    return {LABEL_PROJECT: config.project, **{f"rumistack.{k}": v for k, v in extra.items()}}


def volume_labels(config: Config, volume: str) -> dict[str, str]:
    """rumistack's label and compose's, so `docker compose up` takes the volume as its own."""
    return {**labels(config), COMPOSE_PROJECT: config.project, COMPOSE_VOLUME: volume}


def network_labels(config: Config) -> dict[str, str]:
    """rumistack's label and compose's, so `docker compose up` takes the network as its own."""
    return {**labels(config), COMPOSE_PROJECT: config.project, COMPOSE_NETWORK: "default"}

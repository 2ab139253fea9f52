"""The stack's lifecycle through the Docker SDK: up, down, status.

Every object carries the label rumistack.project=<project>; down and status
act on exactly those objects.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import docker
from docker.errors import APIError
from docker.models.containers import Container
from docker.types import Healthcheck
from docker.types import Mount as DockerMount

from .config import Config
from .engine import connect, ensure_image
from .engine import reason as engine_reason
from .errors import StackError
from .publish import publish, require_users
from .spec import (
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC,
    VOLUMES,
    Service,
    container_name,
    labels,
    network_labels,
    network_name,
    services,
    volume_name,
)
from .users import UserFile
from .volumes import EngineVolumes

_NS = 1_000_000_000


class Progress:
    """What `up` reports while it works; the CLI shows it, tests ignore it."""

    def step(self, message: str) -> None:
        pass

    def waiting(self, states: dict[str, str], elapsed: float) -> None:
        pass


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    container: str
    image: str
    state: str  # running, exited, ...
    health: str  # healthy, starting, unhealthy, or "-" without a health check

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def up(config: Config, users: UserFile, progress: Progress = Progress()) -> str:
    """Bring the stack to its desired state and wait until it is healthy; return the URL."""
    require_users(users)
    client = connect()
    for image in (config.rumitalk_image, config.nginx_image):
        ensure_image(client, image, progress.step)

    volumes = EngineVolumes(client, config, progress.step)
    config_digest = publish(config, users, volumes, progress.step)
    network = _network(client, config)
    for volume in VOLUMES:
        volumes.ensure(volume)

    recreated = set()
    containers = {}
    for service in services(config, config_digest):
        containers[service.name], changed = _ensure_container(client, config, service, network, progress)
        if changed:
            recreated.add(service.name)
    if "rumitalk" in recreated and "nginx" not in recreated:
        # nginx resolved RumiTalk's address at start; a reload resolves the new one
        containers["nginx"].kill(signal="SIGHUP")
    _wait_healthy(config, containers, progress)
    return config.url


def _network(client: docker.DockerClient, config: Config):
    name = network_name(config)
    found = client.networks.list(names=[name], filters={"label": f"{LABEL_PROJECT}={config.project}"})
    if found:
        return found[0]
    return client.networks.create(name, driver="bridge", labels=network_labels(config))


def _find(client: docker.DockerClient, config: Config, service: str) -> Container | None:
    found = client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={config.project}", f"{LABEL_SERVICE}={service}"]})
    return found[0] if found else None


def _ensure_container(client, config: Config, service: Service, network, progress: Progress) -> tuple[Container, bool]:
    """The service's container, created anew only when its definition changed."""
    spec = service.digest(client.images.get(service.image).id)
    existing = _find(client, config, service.name)
    if existing is not None and existing.labels.get(LABEL_SPEC) == spec:
        if existing.status != "running":
            progress.step(f"starting {service.name}")
            _start(existing, service, config)
        else:
            progress.step(f"{service.name} is up to date")
        return existing, False
    if existing is not None:
        progress.step(f"replacing {service.name} (its definition changed)")
        existing.remove(force=True)
    else:
        progress.step(f"creating {service.name}")
    container = client.containers.create(
        service.image,
        name=container_name(config, service.name),
        command=list(service.command) if service.command else None,
        environment=dict(service.environment),
        labels=labels(config, service=service.name, spec=spec),
        healthcheck=Healthcheck(
            test=list(service.healthcheck.test),
            interval=service.healthcheck.interval * _NS,
            timeout=service.healthcheck.timeout * _NS,
            retries=service.healthcheck.retries,
            start_period=service.healthcheck.start_period * _NS,
        ),
        mounts=[
            DockerMount(m.target, volume_name(config, m.volume), type="volume", read_only=m.read_only, no_copy=True)
            for m in service.mounts
        ],
        ports={f"{p.container_port}/tcp": (p.host_ip, p.host_port) for p in service.ports},
        stop_signal=service.stop_signal,
        restart_policy={"Name": service.restart},
        network=network.name,
        # reachable by its service name on the network, as in docker compose
        networking_config={network.name: client.api.create_endpoint_config(aliases=[service.name])},
    )
    _start(container, service, config)
    return container, True


def _start(container: Container, service: Service, config: Config) -> None:
    try:
        container.start()
    except APIError as exc:
        container.remove(force=True)
        reason = engine_reason(exc)
        if "already allocated" in reason or "address already in use" in reason:
            port = service.ports[0]
            raise StackError(
                f"port {port.host_port} on {port.host_ip} is already in use by another program: "
                "choose a free one with RUMISTACK_HTTP_PORT in .env"
            ) from None
        raise StackError(f"{service.name} could not start: {reason}") from None


def _wait_healthy(config: Config, containers: dict[str, Container], progress: Progress) -> None:
    started = time.monotonic()
    while True:
        states = {}
        for name, container in containers.items():
            container.reload()
            state = container.attrs["State"]
            if state["Status"] != "running":
                raise StackError(f"{name} stopped (exit code {state.get('ExitCode')}); its last log lines:\n{_tail(container)}")
            states[name] = state.get("Health", {}).get("Status", "healthy")
        elapsed = time.monotonic() - started
        progress.waiting(states, elapsed)
        if all(s == "healthy" for s in states.values()):
            return
        bad = [n for n, s in states.items() if s == "unhealthy"]
        if bad or elapsed > config.health_timeout:
            name = bad[0] if bad else next(n for n, s in states.items() if s != "healthy")
            why = "is unhealthy" if bad else f"is not healthy after {config.health_timeout} s"
            raise StackError(f"{name} {why}; its last log lines:\n{_tail(containers[name])}")
        time.sleep(0.5)


def _tail(container: Container, lines: int = 20) -> str:
    return container.logs(tail=lines).decode(errors="replace").rstrip() or "(no output)"


def down(config: Config, progress: Progress = Progress()) -> int:
    """Remove the project's containers and network; keep its volumes. Return how many containers went."""
    client = connect()
    containers = client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={config.project}"})
    for container in containers:
        progress.step(f"removing {container.name}")
        container.stop(timeout=10)
        container.remove(force=True)
    for network in client.networks.list(filters={"label": f"{LABEL_PROJECT}={config.project}"}):
        progress.step(f"removing network {network.name}")
        network.remove()
    return len(containers)


def status(config: Config) -> list[ServiceStatus]:
    client = connect()
    result = []
    for container in client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={config.project}", LABEL_SERVICE]}):
        state = container.attrs["State"]
        result.append(ServiceStatus(
            service=container.labels.get(LABEL_SERVICE, "?"),
            container=container.name,
            image=container.attrs["Config"]["Image"],
            state=state["Status"],
            health=state.get("Health", {}).get("Status", "-"),
        ))
    return sorted(result, key=lambda s: s.service)


def logs(config: Config, service: str | None, follow: bool, tail: int) -> Iterator[tuple[str, str]]:
    """(service, line) pairs from the project's containers; with `follow`, until interrupted."""
    client = connect()
    filters = [f"{LABEL_PROJECT}={config.project}", f"{LABEL_SERVICE}={service}" if service else LABEL_SERVICE]
    containers = client.containers.list(all=True, filters={"label": filters})
    if not containers:
        raise StackError(f"no container for {service!r}" if service else "the stack is not running")
    lines: queue.Queue[tuple[str, str] | None] = queue.Queue()

    def read(container: Container) -> None:
        name = container.labels[LABEL_SERVICE]
        buffer = b""
        for chunk in container.logs(stream=True, follow=follow, tail=tail):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                lines.put((name, line.decode(errors="replace")))
        if buffer:
            lines.put((name, buffer.decode(errors="replace")))
        lines.put(None)

    for container in containers:
        threading.Thread(target=read, args=(container,), daemon=True).start()
    running = len(containers)
    while running:
        item = lines.get()
        if item is None:
            running -= 1
        else:
            yield item

"""The stack's lifecycle through the Docker SDK: up, down, status, and pushing
the user file into a running stack.

Every object carries the label rumistack.project=<project>; down and status
act on exactly those objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container
from docker.types import Healthcheck
from docker.types import Mount as DockerMount

from . import https, tls
from .config import Config
from .errors import DockerUnavailable, StackError, UserError
from .render import digest, render
from .spec import (
    AUTH_VOLUME,
    CONFIG_VOLUME,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC,
    NGINX_GID,
    NGINX_UID,
    Service,
    container_name,
    labels,
    network_name,
    services,
    volume_name,
    volumes,
)
from .users import UserFile
from .volumes import File, check_config, write_files

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
    state: str  # running, exited, ...
    health: str  # healthy, starting, unhealthy, or "-" without a health check


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise DockerUnavailable(
            f"cannot reach the Docker engine ({exc.__class__.__name__}): start it "
            "(`systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at it"
        ) from None
    return client


def _users_file(users: UserFile) -> File:
    # the nginx workers (uid/gid 101) read it; nobody else in the container can
    return File(users.content(), mode=0o640, uid=0, gid=NGINX_GID)


def push_users(config: Config, users: UserFile) -> bool:
    """Copy the user file into the auth volume if the stack has one; True if it did.

    nginx opens the file on every request, so the change applies at once.
    """
    client = connect()
    try:
        client.volumes.get(volume_name(config, AUTH_VOLUME))
    except NotFound:
        return False
    _image(client, config.nginx_image, Progress())
    with users.locked():
        write_files(client, config.nginx_image, config.project,
                    {volume_name(config, AUTH_VOLUME): {"htpasswd": _users_file(users)}})
    return True


def up(config: Config, users: UserFile, progress: Progress = Progress()) -> str:
    """Bring the stack to its desired state and wait until it is healthy; return the URL."""
    if not users.names():
        raise UserError("there are no users yet, so no one could log in: add one with `rumistack adduser NAME`")
    now = tls.now()
    certificate = https.local(config, now)
    client = connect()
    for image in (config.rumitalk_image, config.nginx_image) + ((config.certbot_image,) if config.tls == "acme" else ()):
        _image(client, image, progress)

    served = https.prepare(client, config, certificate, now)
    files = render(config, hsts=served.hsts, nginx_version=served.nginx_version)
    progress.step("checking the nginx configuration with nginx -t")
    check_config(client, config.nginx_image, config.project, files, served.check_files())

    network = _network(client, config)
    for volume in volumes(config):
        _volume(client, config, volume)
    progress.step("writing the configuration and the users into their volumes")
    with users.locked():
        write_files(client, config.nginx_image, config.project, {
            volume_name(config, CONFIG_VOLUME): {name: File(text.encode()) for name, text in files.items()},
            volume_name(config, AUTH_VOLUME): {"htpasswd": _users_file(users)},
            **served.volume_files(config),
        })

    recreated = set()
    containers = {}
    for service in services(config, digest(files)):
        if service.pid_namespace:
            # docker binds the container to that container's id: a new one needs a new container
            service = replace(service, inputs=service.inputs + (("pid", containers[service.pid_namespace].id),))
        containers[service.name], changed = _ensure_container(client, config, service, network, progress)
        if changed:
            recreated.add(service.name)
    if ("rumitalk" in recreated or served.changed) and "nginx" not in recreated:
        # nginx resolved RumiTalk's address and read the certificate at start; a reload does both anew
        containers["nginx"].kill(signal="SIGHUP")
    _wait_healthy(config, containers, progress)
    if https.obtain(client, config, containers.get("certbot"), served, now, progress):
        return up(config, users, progress)  # once more with the issued certificate (it may turn hsts on)
    return config.url


def _image(client: docker.DockerClient, ref: str, progress: Progress) -> str:
    """The image's id, pulling it when it is not here."""
    try:
        return client.images.get(ref).id
    except ImageNotFound:
        pass
    progress.step(f"pulling {ref}")
    try:
        return client.images.pull(ref).id
    except DockerException as exc:
        raise StackError(
            f"image {ref} is not on this machine and could not be pulled ({_reason(exc)}): "
            "check the name in .env, or build or load the image first"
        ) from None


def _network(client: docker.DockerClient, config: Config):
    name = network_name(config)
    found = client.networks.list(names=[name], filters={"label": f"{LABEL_PROJECT}={config.project}"})
    if found:
        return found[0]
    return client.networks.create(name, driver="bridge", labels=labels(config))


def _volume(client: docker.DockerClient, config: Config, volume: str) -> None:
    name = volume_name(config, volume)
    try:
        client.volumes.get(name)
    except NotFound:
        client.volumes.create(name, labels=labels(config))


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
        entrypoint=list(service.entrypoint) if service.entrypoint else None,
        pid_mode=f"container:{container_name(config, service.pid_namespace)}" if service.pid_namespace else None,
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
        restart_policy={"Name": "unless-stopped"},
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
        reason = _reason(exc)
        if "already allocated" in reason or "address already in use" in reason:
            port = next((p for p in service.ports if f":{p.host_port}" in reason), service.ports[0])
            key = "RUMISTACK_HTTPS_PORT" if port.container_port == 443 else "RUMISTACK_HTTP_PORT"
            raise StackError(
                f"port {port.host_port} on {port.host_ip} is already in use by another program: "
                f"choose a free one with {key} in .env"
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


def _reason(exc: DockerException) -> str:
    return getattr(exc, "explanation", None) or str(exc)


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


def certificate(config: Config) -> tls.Certificate | None:
    """The certificate nginx serves (None: TLS is off, or there is none yet)."""
    return https.in_use(connect(), config)


def status(config: Config) -> list[ServiceStatus]:
    client = connect()
    result = []
    for container in client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={config.project}", LABEL_SERVICE]}):
        state = container.attrs["State"]
        result.append(ServiceStatus(
            service=container.labels.get(LABEL_SERVICE, "?"),
            container=container.name,
            state=state["Status"],
            health=state.get("Health", {}).get("Status", "-"),
        ))
    return sorted(result, key=lambda s: s.service)

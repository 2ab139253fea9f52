"""The stack's lifecycle through the Docker SDK: up, reload, down, status,
logs, and the stack's volumes for `render` and user changes.

Every object carries the label rumistack.project=<project>; down and status
act on exactly those objects.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.models.containers import Container
from docker.types import Healthcheck, LogConfig
from docker.types import Mount as DockerMount

from . import https, tls
from .builds import built
from .appsettings import AppSettings, load_app_settings
from .config import Config
from .errors import DockerUnavailable, StackError
from .layout import HEALTH_PORT, NGINX_TEST, VERIFIER_ARGS, VERIFIER_PROGRAM
from .progress import Progress
from .publish import publish, require_users
from .pull import image_id, reason
from .secretstore import load_secrets
from .spec import (
    DATA_SERVICES,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_SPEC,
    RESTART,
    Service,
    container_name,
    labels,
    network_labels,
    network_name,
    services,
    volume_name,
    volumes,
)
from .users import UserFile
from .volumes import EngineVolumes

_NS = 1_000_000_000
START_INTERVAL_API = (1, 44)  # Docker 25: health checks with a start interval


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    container: str
    image: str
    state: str  # running, exited, ...
    health: str  # healthy, starting, unhealthy, or "-" without a health check

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


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


def engine_volumes(config: Config, progress: Progress = Progress()) -> EngineVolumes:
    """The project's volumes through the Docker engine; the nginx image is pulled when first needed."""
    return EngineVolumes(connect(), config, progress)


def up(config: Config, users: UserFile, app: AppSettings | None = None, progress: Progress = Progress(),
       upgrading: Callable[[tuple[str, ...]], None] | None = None) -> str:
    """Bring the stack to its desired state and wait until it is healthy; return the URL. `app`:
    RumiTalk's own settings, when the caller has read them already (else read here). `upgrading` is
    called with the data services (DATA_SERVICES) whose image changes, before anything changes: the
    CLI writes a backup there.

    Only what changed changes: a container whose definition is the same is
    left running, a changed nginx config is applied by a graceful reload.
    """
    require_users(users)
    app = app if app is not None else load_app_settings(config)  # a bad file stops `up` before anything changes
    now = tls.now()
    certificate = https.local(config, now)  # a bad certificate file too
    client = connect()
    stack = services(config, load_secrets(config.state_dir, app.secrets), app)
    image_ids = {service.name: built(client, service.build, progress) if service.build
                 else image_id(client, service.image, progress) for service in stack}
    upgraded = tuple(name for name in DATA_SERVICES if name in image_ids
                     and (found := _find(client, config, name)) is not None and found.attrs["Image"] != image_ids[name])
    if upgraded and upgrading is not None:
        upgrading(upgraded)
    engine = EngineVolumes(client, config, progress)
    running_nginx = _running(client, config, "nginx")
    published = publish(config, engine, certificate, progress.step, users,
                        loaded=_loaded_config(running_nginx) if running_nginx else None, app=app)

    network = _network(client, config)
    for volume in volumes(stack):
        engine.ensure(volume)
    _remove_others(client, config, {s.name for s in stack}, progress)

    containers: dict[str, Container] = {}
    recreated, started = set(), set()
    for service in stack:
        _wait_healthy(config, {name: containers[name] for name in service.depends_on}, progress)
        joined = containers[service.pid_namespace] if service.pid_namespace else None
        containers[service.name], changed, starts = _ensure_container(
            client, config, service, image_ids[service.name], network, progress, joined)
        if changed:
            recreated.add(service.name)
        if starts:
            started.add(service.name)
    if "nginx" not in recreated and (published.config_changed or "rumitalk" in recreated):
        # a new config or certificate, or RumiTalk's new address (nginx resolved it at start)
        _reload_nginx(containers["nginx"], published.config_id, progress)
    _wait_healthy(config, containers, progress)
    if https.obtain(config, containers.get("certbot"), "certbot" in started, published.served, engine, now,
                    progress.step):
        return up(config, users, app, progress, upgrading)  # once more with the issued certificate (it may turn hsts on)
    return config.url


def reload(config: Config, progress: Progress = Progress()) -> None:
    """Render the config again, check it, and apply it (and a new certificate) to the running nginx by a
    graceful reload."""
    certificate = https.local(config, tls.now())
    client = connect()
    nginx = _running(client, config, "nginx")
    if nginx is None:
        raise StackError("nginx is not running: start the stack with `rumistack up`")
    published = publish(config, EngineVolumes(client, config, progress), certificate, progress.step)
    _reload_nginx(nginx, published.config_id, progress)


def _loaded_config(nginx: Container) -> str:
    """The config_id of the config the running nginx has loaded ("" if it does not answer)."""
    code, output = nginx.exec_run(["wget", "-q", "-O", "-", f"http://127.0.0.1:{HEALTH_PORT}/nginx-config"])
    return output.decode().strip() if code == 0 else ""


def _reload_nginx(nginx: Container, wanted: str, progress: Progress) -> None:
    """Graceful reload: new workers start with the new config, old ones finish their requests.
    Returns once nginx reports the config `wanted` (its config_id)."""
    code, output = nginx.exec_run(list(NGINX_TEST))
    if code != 0:
        raise StackError(f"the running nginx refused the new configuration and keeps the old one: {output.decode().strip()}")
    nginx.kill(signal="SIGHUP")
    deadline = time.monotonic() + 30
    while _loaded_config(nginx) != wanted:
        if time.monotonic() > deadline:
            raise StackError(f"nginx did not load the new configuration within 30 s; its last log lines:\n{_tail(nginx)}")
        time.sleep(0.1)
    progress.step("reloaded nginx")


def _running(client: docker.DockerClient, config: Config, service: str) -> Container | None:
    container = _find(client, config, service)
    return container if container is not None and container.status == "running" else None


def _remove_others(client: docker.DockerClient, config: Config, wanted: set[str], progress: Progress) -> None:
    """Remove containers of services that are no longer part of the stack; their volumes stay."""
    for container in _service_containers(client, config):
        if container.labels[LABEL_SERVICE] not in wanted:
            progress.step(f"removing {container.labels[LABEL_SERVICE]} (no longer part of the stack)")
            container.remove(force=True)


def _network(client: docker.DockerClient, config: Config):
    name = network_name(config)
    found = client.networks.list(names=[name], filters={"label": f"{LABEL_PROJECT}={config.project}"})
    if found:
        return found[0]
    return client.networks.create(name, driver="bridge", labels=network_labels(config.project))


def _service_containers(client: docker.DockerClient, config: Config, service: str | None = None) -> list[Container]:
    """The project's service containers (helpers excluded), or those of one service."""
    label = f"{LABEL_SERVICE}={service}" if service else LABEL_SERVICE
    return client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={config.project}", label]})


def _find(client: docker.DockerClient, config: Config, service: str) -> Container | None:
    found = _service_containers(client, config, service)
    return found[0] if found else None


def _ensure_container(client, config: Config, service: Service, image: str, network, progress: Progress,
                      joined: Container | None = None) -> tuple[Container, bool, bool]:
    """The service's container, created anew only when its definition changed; `joined`: the container
    whose process namespace it shares (service.pid_namespace). Also whether it was created, and whether
    it was started (created, or found stopped)."""
    spec = service.digest(image, *([joined.id] if joined else []))
    existing = _find(client, config, service.name)
    if existing is not None and existing.labels.get(LABEL_SPEC) == spec:
        if existing.status != "running":
            progress.step(f"starting {service.name}")
            _start(existing, service, config)
            return existing, False, True
        progress.step(f"{service.name} is up to date")
        return existing, False, False
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
        pid_mode=f"container:{joined.id}" if joined else None,
        environment=dict(service.environment),
        labels=labels(config.project, service=service.name, spec=spec),
        healthcheck=_healthcheck(client, service),
        mounts=[
            DockerMount(m.target, volume_name(config, m.volume), type="volume", read_only=m.read_only, no_copy=m.no_copy)
            for m in service.mounts
        ],
        tmpfs={t.target: t.options for t in service.tmpfs},
        ports={f"{p.container_port}/tcp": (p.host_ip, p.host_port) for p in service.ports},
        stop_signal=service.stop_signal,
        restart_policy={"Name": RESTART},
        security_opt=list(service.security_opt) or None,
        cap_drop=list(service.cap_drop) or None,
        cap_add=list(service.cap_add) or None,
        read_only=service.read_only,
        sysctls=dict(service.sysctls) or None,
        user=service.user,
        log_config=LogConfig(type=service.logging.driver, config=service.logging.options()) if service.logging else None,
        network=network.name,
        # reachable by its service name on the network, as in docker compose
        networking_config={network.name: client.api.create_endpoint_config(aliases=[service.name])},
    )
    _start(container, service, config)
    return container, True, True


def _healthcheck(client: docker.DockerClient, service: Service) -> Healthcheck:
    """The service's health check; its start interval only where the engine knows it (API 1.44 and later:
    older engines would check once per interval from the start)."""
    check = service.healthcheck
    result = Healthcheck(test=list(check.test), interval=check.interval * _NS, timeout=check.timeout * _NS,
                         retries=check.retries, start_period=check.start_period * _NS)
    if _api_version(client) >= START_INTERVAL_API:
        result["StartInterval"] = check.start_interval * _NS  # docker-py 7 has no parameter for it
    return result


def _api_version(client: docker.DockerClient) -> tuple[int, ...]:
    return tuple(int(part) for part in client.api.api_version.split("."))


def _health(container: Container) -> str:
    """The engine's word on a running container's health ("healthy" without a check); while it says
    "starting", the container's own check run now: on engines without a start interval the engine runs
    its first check only a whole interval (30 s) after the start."""
    health = container.attrs["State"].get("Health", {}).get("Status", "healthy")
    test = tuple((container.attrs["Config"].get("Healthcheck") or {}).get("Test") or ())
    if health != "starting":
        return health
    if test[:1] == ("CMD",):
        command = list(test[1:])
    elif test[:1] == ("CMD-SHELL",):
        command = ["sh", "-c", test[1]]
    else:
        return health
    try:
        return "healthy" if container.exec_run(command).exit_code == 0 else health
    except APIError:
        return health  # it is stopping or restarting: the next look says


def _start(container: Container, service: Service, config: Config) -> None:
    try:
        container.start()
    except APIError as exc:
        container.remove(force=True)
        why = reason(exc)
        if "already allocated" in why or "address already in use" in why:
            port = next((p for p in service.ports if f":{p.host_port}" in why), service.ports[0])
            key = "RUMISTACK_HTTPS_PORT" if port.container_port == 443 else "RUMISTACK_HTTP_PORT"
            raise StackError(
                f"port {port.host_port} on {port.host_ip} is already in use by another program: "
                f"choose a free one with {key} in .env"
            ) from None
        raise StackError(f"{service.name} could not start: {why}") from None


def _wait_healthy(config: Config, containers: dict[str, Container], progress: Progress) -> None:
    """Until every container is healthy: by the engine's word, or, while the engine says "starting", by
    its own check passing when `up` runs it (_health)."""
    started = time.monotonic()
    ready: set[str] = set()
    while True:
        states = {}
        for name, container in containers.items():
            container.reload()
            state = container.attrs["State"]
            if state["Status"] != "running":
                raise StackError(f"{name} stopped (exit code {state.get('ExitCode')}); its last log lines:\n{_tail(container)}")
            states[name] = "healthy" if name in ready else _health(container)
            if states[name] == "healthy":
                ready.add(name)
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


def down(config: Config, remove_volumes: bool = False, progress: Progress = Progress()) -> int:
    """Remove the project's containers and network, and with `remove_volumes` its volumes
    (RumiTalk's data included). Return how many containers went."""
    client = connect()
    project = {"label": f"{LABEL_PROJECT}={config.project}"}
    containers = client.containers.list(all=True, filters=project)
    for container in containers:
        progress.step(f"removing {container.name}")
        container.stop(timeout=10)
        container.remove(force=True)
    for network in client.networks.list(filters=project):
        progress.step(f"removing network {network.name}")
        network.remove()
    if remove_volumes:
        for volume in client.volumes.list(filters=project):
            progress.step(f"removing volume {volume.name}")
            volume.remove(force=True)
    return len(containers)


def certificate(config: Config) -> tls.Certificate | None:
    """The certificate nginx serves (None: TLS is off, or there is none yet). Never pulls: without the nginx
    image here, nothing ever served one."""
    client = connect()
    try:
        client.images.get(config.nginx_image)
    except ImageNotFound:
        return None
    return https.in_use(config, EngineVolumes(client, config))


def status(config: Config) -> list[ServiceStatus]:
    client = connect()
    result = []
    for container in _service_containers(client, config):
        state = container.attrs["State"]
        result.append(ServiceStatus(
            service=container.labels.get(LABEL_SERVICE, "?"),
            container=container.name,
            image=container.attrs["Config"]["Image"],
            state=state["Status"],
            health=_health(container) if state["Status"] == "running" and "Health" in state else
            state.get("Health", {}).get("Status", "-"),
        ))
    return sorted(result, key=lambda s: s.service)


AUTH_MINUTES = 5  # the minutes of auth figures `status` shows


def auth_minutes(config: Config) -> list[dict[str, int]] | None:
    """The verifier's figures of the last AUTH_MINUTES minutes, oldest first, each {"minute": its start (unix
    time), counter: count} (see verifier.Counts.recent); None when the verifier is not running. Read inside
    its container: its metrics are on the stack's network only."""
    verifier = _running(connect(), config, "verifier")
    if verifier is None:
        return None
    code, output = verifier.exec_run([*VERIFIER_PROGRAM, "minutes", *VERIFIER_ARGS], demux=True)
    if code != 0:
        return None
    return json.loads(output[0])[-AUTH_MINUTES:]


def logs(config: Config, service: str | None, follow: bool, tail: int) -> Iterator[tuple[str, str]]:
    """(service, line) pairs from the project's containers; with `follow`, until interrupted."""
    client = connect()
    containers = _service_containers(client, config, service)
    if not containers:
        raise StackError(f"no container for {service!r}" if service else "the stack is not running")
    lines: queue.Queue[tuple[str, str] | Exception | None] = queue.Queue()

    def read(container: Container) -> None:
        name = container.labels[LABEL_SERVICE]
        buffer = b""
        try:
            for chunk in container.logs(stream=True, follow=follow, tail=tail):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    lines.put((name, line.decode(errors="replace")))
        except Exception as exc:  # noqa: BLE001 - the engine went away: the command says so, not this thread
            lines.put(exc)
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
        elif isinstance(item, Exception):
            raise item
        else:
            yield item

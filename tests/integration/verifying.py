"""The verifier as the stack runs it (spec.py's verifier service), for the nginx containers that tests
start themselves: its image built the way `rumistack up` builds it, its container hardened the same way,
and what tests read from it (its counters, its log)."""

from __future__ import annotations

import time

import docker
from docker.errors import APIError
from docker.models.containers import Container
from docker.types import Mount

from rumistack.builds import built
from rumistack.config import load_config
from rumistack.progress import Progress
from rumistack.secretstore import GENERATORS
from rumistack.spec import services
from rumistack.volumes import EngineVolumes
from testenv import TEST_LABELS


def service(base_image: str):
    config = load_config("/nonexistent", environ={"RUMISTACK_TOOLS_BASE_IMAGE": base_image})
    return next(s for s in services(config, {name: "x" for name in GENERATORS}) if s.name == "verifier")


def start(client: docker.DockerClient, base_image: str, network: str, volumes: EngineVolumes) -> Container:
    """The verifier on `network`, with the stack's volumes of `volumes`; returns once it answers nginx's
    socket. Docker restarts it when its process dies, as the stack's."""
    verifier = service(base_image)
    built(client, verifier.build, Progress())
    container = client.containers.run(
        verifier.image, list(verifier.command), entrypoint=list(verifier.entrypoint), user=verifier.user,
        mounts=[Mount(m.target, volumes.docker_name(m.volume), type="volume", read_only=m.read_only,
                      no_copy=m.no_copy) for m in verifier.mounts],
        security_opt=["no-new-privileges:true"], cap_drop=list(verifier.cap_drop), read_only=verifier.read_only,
        sysctls=dict(verifier.sysctls),
        restart_policy={"Name": "unless-stopped"}, network=network, labels=TEST_LABELS, detach=True)
    wait_answering(container)
    return container


def wait_answering(container: Container, timeout: float = 60) -> None:
    health = service("x").healthcheck.test[1:]
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        try:
            if container.status == "running" and container.exec_run(list(health)).exit_code == 0:
                return
        except APIError:  # restarting between the two looks
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the verifier does not answer: {container.logs().decode(errors='replace')}")
        time.sleep(0.2)


def metrics(container: Container) -> dict[str, int]:
    """Its counters, from its metrics endpoint (on its own network): {'name{label="value"}': count}."""
    code, output = container.exec_run([*service("x").entrypoint, "metrics", *_args()])
    assert code == 0, output
    return {name: int(value) for line in output.decode().splitlines() if line and not line.startswith("#")
            for name, value in [line.rsplit(" ", 1)]}


def _args() -> list[str]:
    command = service("x").command
    return list(command[1:command.index("--user-file")])


def logs(container: Container) -> str:
    return container.logs().decode(errors="replace")

"""A real Docker Swarm of three engines for the swarm tests: Docker 20.10 in
containers of the local image rumistack-test/docker-node (the recipe of
../shared/ENVIRONMENT.md: the explicit capabilities, the cgroup mount,
dockerd on TCP), one manager and two workers, on a bridge network of the
test run's own. Every container, volume and network carries the run's
label, so the session's cleanup removes them, and a later session sweeps
what a crashed one left (tests/leftovers.py). The local images a stack
needs go into every node with `docker save` and `docker load`, in parallel.

The nodes' hostnames are node-1 (the manager), node-2 and node-3: the names
docs/swarm.md's commands use. The host reaches each node at its address on
the test network, the manager's engine at tcp://<address>:2375."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import leftovers
import pytest
from docker.models.containers import Container

import verifying
from rumistack.builds import built as built_verifier
from rumistack.progress import Progress
from testenv import IN_CI, RUN_ID, TEST_LABELS

NODES = ("node-1", "node-2", "node-3")  # the first is the manager
ENGINE_PORT = 2375
# a Docker engine inside a container: what dockerd needs of the kernel (this machine lacks
# CAP_SYS_RESOURCE, so --privileged fails), and its containers' cgroups under one of its own
_CAPS_DROP = ["SYS_RESOURCE"]


# the stack's default ports on each node (RUMISTACK_HTTP_PORT, RUMISTACK_HTTPS_PORT), which each node
# container publishes on the host's loopback, at a port Docker chooses
NODE_PORTS = (8080, 8443)


@dataclass
class Node:
    hostname: str
    container: Container
    address: str
    local_ports: dict[int, int]  # {port on the node: the host loopback port that leads there}

    @property
    def engine(self) -> str:
        return f"tcp://{self.address}:{ENGINE_PORT}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.engine, timeout=120)

    def start_again(self, network: str, timeout: float = 120) -> None:
        """Start the stopped node: its engine comes back with its state (the swarm's among it), perhaps at
        another address and other host ports."""
        self.container.start()
        self.container.reload()
        self.address = self.container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        published = self.container.attrs["NetworkSettings"]["Ports"]
        self.local_ports = {port: int(published[f"{port}/tcp"][0]["HostPort"]) for port in NODE_PORTS}
        _wait_for_engine(self, time.monotonic() + timeout)


@dataclass
class Swarm:
    nodes: list[Node]
    network: str
    images: tuple[str, ...] = ()
    _clients: dict[str, docker.DockerClient] = field(default_factory=dict)

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def client(self, node: Node | None = None) -> docker.DockerClient:
        node = node or self.manager
        if node.hostname not in self._clients:
            self._clients[node.hostname] = node.client()
        return self._clients[node.hostname]

    def env(self) -> dict[str, str]:
        """The environment for the docker CLI and rumistack against the manager."""
        return {**os.environ, "DOCKER_HOST": self.manager.engine}

    def docker(self, *args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """The host's docker CLI against the manager."""
        return subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True, timeout=timeout,
                              cwd=cwd)


def _wait_for_engine(node: Node, deadline: float) -> None:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            node.client().ping()
            return
        except Exception as exc:  # the engine is still starting
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"the engine in {node.hostname} did not answer: {last}")


def _load(node: Node, tarball: Path) -> None:
    with open(tarball, "rb") as stream:
        done = subprocess.run(["docker", "exec", "-i", node.container.id, "docker", "load", "-q"], stdin=stream,
                              capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"loading the images into {node.hostname} failed: {done.stderr.strip()}")


def start(client: docker.DockerClient, node_image: str, images: tuple[str, ...], timeout: float = 120) -> Swarm:
    """The three engines, the swarm, and `images` in every node."""
    prefix = f"rumistack-swarm-{RUN_ID}"
    network = client.networks.create(f"{prefix}-net", driver="bridge", labels=TEST_LABELS)
    nodes: list[Node] = []
    for hostname in NODES:
        name = f"{prefix}-{hostname}"
        data = client.volumes.create(f"{name}-data", labels=TEST_LABELS)
        container = client.containers.run(
            node_image, name=name, hostname=hostname, detach=True, labels=TEST_LABELS, network=network.name,
            cap_add=["ALL"], cap_drop=_CAPS_DROP, security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            tmpfs={"/run": ""}, volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                                         data.name: {"bind": "/var/lib/docker", "mode": "rw"}},
            ports={f"{port}/tcp": ("127.0.0.1", None) for port in NODE_PORTS},
            command=["dockerd", "--host=unix:///var/run/docker.sock", f"--host=tcp://0.0.0.0:{ENGINE_PORT}",
                     "--tls=false", f"--cgroup-parent=/{name}"],
        )
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        published = container.attrs["NetworkSettings"]["Ports"]
        nodes.append(Node(hostname, container, address,
                          {port: int(published[f"{port}/tcp"][0]["HostPort"]) for port in NODE_PORTS}))
    swarm = Swarm(nodes, network.name, images)
    deadline = time.monotonic() + timeout
    for node in nodes:
        _wait_for_engine(node, deadline)
    with tempfile.TemporaryDirectory(prefix="rumistack-swarm-images-") as tmp:
        tarball = Path(tmp) / "images.tar"
        saved = subprocess.run(["docker", "save", "-o", str(tarball), *images], capture_output=True, text=True,
                               timeout=600)
        if saved.returncode != 0:
            raise RuntimeError(f"docker save failed: {saved.stderr.strip()}")
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda n: _load(n, tarball), nodes))
    manager = swarm.client()
    manager.swarm.init(advertise_addr=swarm.manager.address, listen_addr=f"{swarm.manager.address}:2377")
    token = manager.swarm.attrs["JoinTokens"]["Worker"]
    for node in nodes[1:]:
        swarm.client(node).swarm.join(remote_addrs=[f"{swarm.manager.address}:2377"], join_token=token,
                                      advertise_addr=node.address, listen_addr=f"{node.address}:2377")
    while len([n for n in manager.nodes.list() if n.attrs["Status"]["State"] == "ready"]) < len(nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not join the swarm")
        time.sleep(0.5)
    return swarm


def stop(client: docker.DockerClient, swarm: Swarm) -> None:
    """The nodes (and so everything in them), their volumes and the network."""
    for c in swarm._clients.values():
        c.close()
    for node in swarm.nodes:
        try:
            node.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
        try:
            client.volumes.get(f"{node.container.name}-data").remove(force=True)
        except docker.errors.NotFound:
            pass
    try:
        client.networks.get(swarm.network).remove()
    except docker.errors.NotFound:
        pass


@pytest.fixture(scope="session")
def swarm(docker_client: docker.DockerClient, test_images: dict[str, str]) -> Iterator[Swarm]:
    """The test swarm, with the images of the stack's services loaded in each node. With CI=true a
    swarm that cannot be built is a failure, never a skip."""
    try:
        # the verifier's image, built here as `rumistack up` builds it: nodes pull nothing (no registry)
        verifier = verifying.service(test_images["python"])
        built_verifier(docker_client, verifier.build, Progress())
        wanted = (*(test_images[name] for name in ("nginx", "rumitalk", "mongodb", "redis")), verifier.image)
        built = start(docker_client, test_images["docker-node"], wanted)
    except Exception as exc:
        leftovers.remove_run(docker_client, RUN_ID)
        if IN_CI:
            pytest.fail(f"the test swarm could not be built: {exc}")
        pytest.skip(f"the test swarm could not be built: {exc}")
    try:
        yield built
    finally:
        stop(docker_client, built)

"""Restarts: the main process of each container killed with SIGKILL, and Docker brings it back; the
Docker engine restarted (one of the test's own, in a container), and the stack comes back by itself. Each
time the stack serves again (the auth matrix) with its data intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import verifying
from clirun import PASSWORD, Project, rumistack
from docker.models.containers import Container
from testenv import TEST_LABELS
from test_backup import DOCUMENTS, UPLOAD, _documents, _read, _seed
from web import basic, send

from rumistack.builds import built
from rumistack.probe import ProbeError, request
from rumistack.progress import Progress


def _matrix(port: int) -> list[int]:
    """Without credentials, with them, a wrong password, RumiTalk's own /api/ auth, the exempt /health."""
    alice, wrong = basic("alice", PASSWORD), basic("alice", "wrong password")
    return [send(port, "/").status, send(port, "/", headers={"Authorization": alice}).status,
            send(port, "/", headers={"Authorization": wrong}).status, send(port, "/api/x").status,
            send(port, "/health").status]


SERVING = [401, 200, 401, 401, 200]


def _serving_again(project: Project, seconds: float = 60) -> list[int]:
    """The matrix once it answers as a serving stack does, trying for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = _matrix(project.port)
            if found == SERVING or time.monotonic() > deadline:
                return found
        except (OSError, ProbeError):  # nginx not listening yet behind Docker's published port
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_sigkill_of_each_main_process_is_restarted_with_data_intact(running_project):
    project = running_project
    _seed(project)
    assert _matrix(project.port) == SERVING
    for service in ("mongodb", "rumitalk", "nginx"):
        container = project.client.containers.get(f"{project.name}-{service}")
        restarts, pid = container.attrs["RestartCount"], container.attrs["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)  # from outside the container: its pid 1 ignores what it has no handler for
        deadline = time.monotonic() + 60
        while True:
            container.reload()
            if container.attrs["RestartCount"] > restarts and container.status == "running":
                break
            assert time.monotonic() < deadline, (service, container.attrs["State"])
            time.sleep(0.2)
        assert container.attrs["State"]["Pid"] != pid
        assert _serving_again(project) == SERVING, service
        assert _documents(project) == DOCUMENTS, service
        assert _read(project, "rumitalk", "/app/uploads/user-1/report.pdf") == UPLOAD, service


@contextmanager
def _engine_node(client: docker.DockerClient, image: str) -> Iterator[tuple[Container, str]]:
    """A Docker engine of the test's own in a container (run as /work/shared/ENVIRONMENT.md's swarm nodes
    are), on a network of the test's own, its /var/lib/docker on a volume that outlives a restart; yields
    the node and its address. Everything carries the run's label, so a crashed run's leftovers go too."""
    name = f"rumistack-node-{TEST_LABELS['rumistack.test']}-{uuid.uuid4().hex[:6]}"
    network = client.networks.create(name, driver="bridge", labels=TEST_LABELS)
    volume = client.volumes.create(f"{name}-data", labels=TEST_LABELS)
    node = None
    try:
        node = client.containers.run(
            image, ["dockerd", "--host=unix:///var/run/docker.sock", "--host=tcp://0.0.0.0:2375", "--tls=false",
                    f"--cgroup-parent=/{name}"],
            name=name, detach=True, labels=TEST_LABELS, network=network.name, hostname=name,
            cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"], tmpfs={"/run": ""},
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                     volume.name: {"bind": "/var/lib/docker", "mode": "rw"}})
        node.reload()
        address = node.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        _engine_answers(address)
        yield node, address
    finally:
        if node is not None:
            node.remove(force=True, v=True)
        volume.remove(force=True)
        network.remove()


def _engine_answers(address: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            docker.DockerClient(base_url=f"tcp://{address}:2375", timeout=5).ping()
            return
        except docker.errors.DockerException:
            assert time.monotonic() < deadline, f"the engine in the node at {address} never answered"
            time.sleep(0.5)


def _node_matrix(address: str, port: int) -> list[int]:
    base, alice = f"http://{address}:{port}", {"Authorization": basic("alice", PASSWORD)}
    return [request(base, "/").status, request(base, "/", headers=alice).status,
            request(base, "/", headers={"Authorization": basic("alice", "wrong password")}).status,
            request(base, "/api/x").status, request(base, "/health").status]


def test_the_stack_comes_back_by_itself_after_the_engine_restarts(project, docker_client, test_images, monkeypatch):
    """Never the host's engine (others use it): an engine of the test's own, restarted with its node."""
    with _engine_node(docker_client, test_images["docker-node"]) as (node, address):
        # the verifier's image, built here as `up` builds it: the node has no Python image to build it on
        verifier = verifying.service(test_images["python"])
        built(docker_client, verifier.build, Progress())
        wanted = [test_images["nginx"], test_images["rumitalk"], test_images["mongodb"], verifier.image]
        saved = subprocess.Popen(["docker", "save", *wanted], stdout=subprocess.PIPE)
        loaded = subprocess.run(["docker", "exec", "-i", node.id, "docker", "load"], stdin=saved.stdout,
                                capture_output=True, timeout=600)
        saved.stdout.close()
        assert saved.wait(timeout=60) == 0 and loaded.returncode == 0, loaded.stderr
        monkeypatch.setenv("DOCKER_HOST", f"tcp://{address}:2375")
        monkeypatch.setenv("RUMISTACK_BIND_ADDRESS", address)  # the node's address: the node publishes there
        monkeypatch.setenv("RUMISTACK_HTTP_PORT", "8080")  # in the node's own network namespace
        assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
        result = rumistack("up", "--yes")
        assert result.exit_code == 0, result.output
        engine = docker.DockerClient(base_url=f"tcp://{address}:2375")
        mongo = engine.containers.get(f"{project.name}-mongodb")
        document = json.dumps(DOCUMENTS[0])
        assert mongo.exec_run(["mongo-stub", "insert", "RumiTalk", "conversations", document]).exit_code == 0
        assert _node_matrix(address, 8080) == SERVING
        started = {c.name: c.attrs["State"]["StartedAt"] for c in engine.containers.list()}

        node.restart(timeout=30)  # dockerd stops, and starts again with the same /var/lib/docker
        node.reload()
        address = node.attrs["NetworkSettings"]["Networks"][next(iter(node.attrs["NetworkSettings"]["Networks"]))]["IPAddress"]
        _engine_answers(address)
        deadline, found = time.monotonic() + 90, None
        while found != SERVING and time.monotonic() < deadline:
            try:
                found = _node_matrix(address, 8080)
            except (OSError, ProbeError):
                time.sleep(0.5)
        assert found == SERVING
        engine = docker.DockerClient(base_url=f"tcp://{address}:2375")
        again = {c.name: c.attrs["State"]["StartedAt"] for c in engine.containers.list()}
        assert set(again) == set(started) and all(again[n] != started[n] for n in started)  # each one restarted
        mongo = engine.containers.get(f"{project.name}-mongodb")
        code, output = mongo.exec_run(["mongo-stub", "find", "RumiTalk", "conversations"])
        assert code == 0 and json.loads(output) == DOCUMENTS[:1]
        monkeypatch.setenv("DOCKER_HOST", f"tcp://{address}:2375")
        assert rumistack("down", "--volumes", "--yes").exit_code == 0
    monkeypatch.delenv("DOCKER_HOST")

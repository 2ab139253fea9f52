"""The subjects of the auth tests: a real nginx running a config in front of
the RumiTalk stand-in, on a Docker network of its own, with the config and
users in named volumes written by rumistack's own volume code
(testcontainers: rumistack's rendered config, or the seed config from
RumiTalk's documentation); and the compose bundle, brought up by the
README's "Docker Compose only" commands. `proxy` is both rumistack stacks.

Each test module gets a fresh nginx of each stack (a new container, or the
bundle's nginx restarted), whose first request verifies the user's
credential: so the verification limits and the cache of verified
credentials start anew, and a module that sends many wrong passwords never
throttles the next one's right credential."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import docker
import pytest
from bundle import Bundle, readme_blocks
from clirun import PASSWORD as CLI_PASSWORD
from clirun import Project, free_port, new_project_name, rumistack
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import HttpWaitStrategy
from web import basic, send

from rumistack.config import load_config
from rumistack.probe import ProbeError
from rumistack.publish import users_file
from rumistack.render import AUTH_DIR, CONF_DIR, MAIN_FILE, render
from rumistack.spec import AUTH_TMPFS_MOUNT, COMPOSE_PROJECT
from rumistack.users import UserFile
from rumistack.volumes import File, publish_user_file, write_files
from testenv import IN_CI, TEST_LABELS

USER, PASSWORD, REALM = "alice", "correct horse battery", "RumiTalk Test"
SEED = Path(__file__).parent.parent / "data" / "seed"


class Proxy(Protocol):
    """nginx with the rendered config, one user, in front of the stand-in."""

    port: int
    user: str
    password: str
    realm: str

    def add_user(self, name: str, password: str) -> None: ...

    def set_password(self, name: str, password: str) -> None: ...

    def delete_user(self, name: str) -> None: ...

    def nginx_started_at(self) -> str: ...


@dataclass
class ContainerProxy:
    port: int
    users: UserFile
    auth_volume: str
    nginx: DockerContainer
    stub: DockerContainer  # its port 3080 is published too, to compare with RumiTalk's own answers
    client: docker.DockerClient
    image: str
    user: str = USER
    password: str = PASSWORD
    realm: str = REALM

    def add_user(self, name: str, password: str) -> None:
        self.users.add(name, password)
        self._push()

    def set_password(self, name: str, password: str) -> None:
        self.users.set_password(name, password)
        self._push()

    def delete_user(self, name: str) -> None:
        self.users.delete(name)
        self._push()

    def nginx_started_at(self) -> str:
        container = self.nginx.get_wrapped_container()
        container.reload()
        return container.attrs["State"]["StartedAt"]

    def logs(self) -> str:
        return self.nginx.get_wrapped_container().logs().decode(errors="replace")

    def _push(self) -> None:
        publish_user_file(self.client, self.image, "test", self.auth_volume, users_file(self.users))


@dataclass
class ComposeProxy:
    bundle: Bundle
    client: docker.DockerClient
    user: str = USER
    password: str = PASSWORD
    realm: str = REALM

    @property
    def port(self) -> int:
        return self.bundle.port

    def add_user(self, name: str, password: str) -> None:
        self.bundle.compose("run", "--rm", "rumistack", "adduser", name, "--password-stdin", input=password + "\n")

    def set_password(self, name: str, password: str) -> None:
        self.bundle.compose("run", "--rm", "rumistack", "passwd", name, "--password-stdin", input=password + "\n")

    def delete_user(self, name: str) -> None:
        self.bundle.compose("run", "--rm", "rumistack", "deluser", name)

    def nginx(self) -> Container:
        labels = [f"{COMPOSE_PROJECT}={self.bundle.project}", "com.docker.compose.service=nginx"]
        (container,) = self.client.containers.list(filters={"label": labels})
        return container

    def nginx_started_at(self) -> str:
        return self.nginx().attrs["State"]["StartedAt"]


def _fresh(proxy: Proxy) -> Proxy:
    """The proxy once its nginx answers and has verified (and cached) the user's credential."""
    for _ in range(300):
        try:
            if send(proxy.port, "/health").status == 200:
                break
        except ProbeError:
            pass
        time.sleep(0.1)
    answer = send(proxy.port, "/", headers={"Authorization": basic(proxy.user, proxy.password)})
    assert answer.status == 200, answer.status
    return proxy


@pytest.fixture(scope="session")
def compose_plugin(docker_client) -> None:
    """Docker Compose v2 as a docker CLI plugin."""
    result = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if result.returncode != 0:
        message = f"no Docker Compose v2 plugin ({result.stderr.strip()}); run scripts/test, which installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def compose_bundle(docker_client, image_env, compose_plugin, tmp_path_factory) -> Bundle:
    """The bundle up by the README's "Docker Compose only" commands for hosts without Python, as written."""
    (block,) = [b for b in readme_blocks() if "cp .env.example .env" in b]
    bundle = Bundle.create(tmp_path_factory.mktemp("compose"), image_env, realm=REALM)
    try:
        for command in block:
            bundle.sh(command, input=f"{PASSWORD}\n{PASSWORD}\n" if " adduser " in command else None)
        yield bundle
    finally:
        bundle.remove(docker_client)


@contextmanager
def running_proxy(docker_client, test_images, tmp_path: Path, files: dict[str, str],
                  user_file: File | None = None) -> Iterator[ContainerProxy]:
    """nginx running `files` as its config directory, in front of the stand-in; the auth volume
    holds one user, or `user_file` if given."""
    suffix = uuid.uuid4().hex[:8]
    users = UserFile(tmp_path / "htpasswd")
    users.add(USER, PASSWORD)
    conf_volume = docker_client.volumes.create(f"rumistack-test-conf-{suffix}", labels=TEST_LABELS).name
    auth_volume = docker_client.volumes.create(f"rumistack-test-auth-{suffix}", labels=TEST_LABELS).name
    write_files(docker_client, test_images["nginx"], "test", {
        conf_volume: {name: File(text.encode()) for name, text in files.items()}})
    publish_user_file(docker_client, test_images["nginx"], "test", auth_volume, user_file or users_file(users))
    with Network(docker_network_kw={"labels": TEST_LABELS}) as network:
        stub = (
            DockerContainer(test_images["rumitalk"])
            .with_network(network).with_network_aliases("rumitalk")
            .with_kwargs(labels=TEST_LABELS)
            .waiting_for(HttpWaitStrategy(3080, "/health").for_status_code(200))
            .with_exposed_ports(3080)
        )
        with stub:
            nginx = (
                DockerContainer(test_images["nginx"])
                .with_network(network)
                .with_command(["nginx", "-c", f"{CONF_DIR}/{MAIN_FILE}", "-g", "daemon off;"])
                .with_volume_mapping(conf_volume, CONF_DIR, "ro")
                .with_volume_mapping(auth_volume, AUTH_DIR, "ro")
                # the stack's tmpfs for the cache of verified credentials (its options, despite the name)
                .with_tmpfs_mount(AUTH_TMPFS_MOUNT.target, AUTH_TMPFS_MOUNT.options)
                .with_kwargs(labels=TEST_LABELS)
                .with_exposed_ports(80)
                .waiting_for(HttpWaitStrategy(80, "/health").for_status_code(200))
            )
            with nginx:
                yield ContainerProxy(int(nginx.get_exposed_port(80)), users, auth_volume, nginx, stub,
                                     docker_client, test_images["nginx"])


@pytest.fixture(scope="module")
def containers_proxy(docker_client, test_images, tmp_path_factory) -> Iterator[ContainerProxy]:
    """nginx with rumistack's rendered config (defaults but the realm), started by testcontainers."""
    files = render(load_config("/nonexistent", environ={"RUMISTACK_REALM": REALM}))
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files) as running:
        yield _fresh(running)


@pytest.fixture(scope="module")
def compose_proxy(compose_bundle, docker_client) -> ComposeProxy:
    """nginx with rumistack's rendered config (defaults but the realm), started by the compose bundle;
    restarted for each module."""
    proxy = ComposeProxy(compose_bundle, docker_client)
    proxy.nginx().restart(timeout=10)
    return _fresh(proxy)


@pytest.fixture(scope="module", params=["containers", "compose"])
def proxy(request) -> Proxy:
    """The same tests against nginx started by testcontainers and by the compose bundle."""
    return request.getfixturevalue(f"{request.param}_proxy")


@pytest.fixture(scope="module")
def seed_proxy(docker_client, test_images, tmp_path_factory) -> Iterator[ContainerProxy]:
    """nginx with the configuration RumiTalk's documentation gives (tests/data/seed)."""
    files = {p.name: p.read_text() for p in SEED.iterdir()}
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files) as running:
        yield running


@pytest.fixture
def project(docker_client, image_env, tmp_path, monkeypatch) -> Iterator[Project]:
    """A working directory and an environment for one rumistack project of its own, run with
    the test images on a free loopback port; its containers, network and volumes go afterwards."""
    running = Project(new_project_name(), free_port(), docker_client)
    monkeypatch.chdir(tmp_path)
    env = {**image_env, "RUMISTACK_PROJECT": running.name, "RUMISTACK_HTTP_PORT": str(running.port),
           "RUMISTACK_BIND_ADDRESS": "127.0.0.1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield running
    rumistack("down", "--volumes", "--yes")


@pytest.fixture
def running_project(project) -> Project:
    """`project` with a user alice and the stack up."""
    assert rumistack("adduser", "alice", "--password-stdin", input=CLI_PASSWORD + "\n").exit_code == 0
    result = rumistack("up")
    assert result.exit_code == 0, result.output
    return project

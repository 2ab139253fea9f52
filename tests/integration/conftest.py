"""A real nginx running the rendered config in front of the RumiTalk stand-in,
on a Docker network of its own, with the config and users in named volumes
written by rumistack's own volume code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import HttpWaitStrategy

from rumistack.config import load_config
from rumistack.render import AUTH_DIR, CONF_DIR, MAIN_FILE, render
from rumistack.spec import NGINX_GID
from rumistack.users import UserFile
from rumistack.volumes import File, write_files
from clirun import PASSWORD as CLI_PASSWORD, Project, free_port, new_project_name, rumistack
from testenv import TEST_LABELS

USER, PASSWORD, REALM = "alice", "correct horse battery", "RumiTalk Test"
SEED = Path(__file__).parent.parent / "data" / "seed"


@dataclass
class Proxy:
    port: int
    users: UserFile
    auth_volume: str
    nginx: DockerContainer
    stub: DockerContainer
    image: str
    user: str = USER
    password: str = PASSWORD
    realm: str = REALM

    def push_users(self, client) -> None:
        write_files(client, self.image, "test", {self.auth_volume: {
            "htpasswd": File(self.users.content(), mode=0o640, gid=NGINX_GID)}})


@contextmanager
def running_proxy(docker_client, test_images, tmp_path: Path, files: dict[str, str],
                  user_file: File | None = None) -> Iterator[Proxy]:
    """nginx running `files` as its config directory, in front of the stand-in; the auth volume
    holds one user, or `user_file` if given."""
    suffix = uuid.uuid4().hex[:8]
    users = UserFile(tmp_path / "htpasswd")
    users.add(USER, PASSWORD)
    conf_volume = docker_client.volumes.create(f"rumistack-test-conf-{suffix}", labels=TEST_LABELS).name
    auth_volume = docker_client.volumes.create(f"rumistack-test-auth-{suffix}", labels=TEST_LABELS).name
    write_files(docker_client, test_images["nginx"], "test", {
        conf_volume: {name: File(text.encode()) for name, text in files.items()},
        auth_volume: {"htpasswd": user_file or File(users.content(), mode=0o640, gid=NGINX_GID)},
    })
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
                .with_kwargs(labels=TEST_LABELS)
                .with_exposed_ports(80)
                .waiting_for(HttpWaitStrategy(80, "/health").for_status_code(200))
            )
            with nginx:
                yield Proxy(int(nginx.get_exposed_port(80)), users, auth_volume, nginx, stub, test_images["nginx"])


@pytest.fixture(scope="module")
def proxy(docker_client, test_images, tmp_path_factory) -> Iterator[Proxy]:
    """nginx with rumistack's rendered config (defaults but the realm)."""
    files = render(load_config("/nonexistent", environ={"RUMISTACK_REALM": REALM}))
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files) as running:
        yield running


@pytest.fixture(scope="module")
def seed_proxy(docker_client, test_images, tmp_path_factory) -> Iterator[Proxy]:
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

"""A real nginx running the rendered config in front of the RumiTalk stand-in,
on a Docker network of its own, with the config and users in named volumes
written by rumistack's own volume code."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from proxyparts import PASSWORD, REALM, USER, nginx_container, users_file, volumes
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import HttpWaitStrategy

from rumistack.users import UserFile
from rumistack.volumes import publish_user_file
from testenv import TEST_LABELS


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
        publish_user_file(client, self.image, "test", self.auth_volume, users_file(self.users))

    def logs(self) -> str:
        return self.nginx.get_wrapped_container().logs().decode(errors="replace")


@pytest.fixture(scope="module")
def stub_network(test_images) -> tuple[Network, DockerContainer]:
    """A network of its own with the RumiTalk stand-in on it, by RumiTalk's name."""
    with Network(docker_network_kw={"labels": TEST_LABELS}) as network:
        stub = (
            DockerContainer(test_images["rumitalk"])
            .with_network(network).with_network_aliases("rumitalk")
            .with_kwargs(labels=TEST_LABELS)
            .waiting_for(HttpWaitStrategy(3080, "/health").for_status_code(200))
            .with_exposed_ports(3080)
        )
        with stub:
            yield network, stub


@pytest.fixture(scope="module")
def proxy(docker_client, test_images, tmp_path_factory, stub_network) -> Proxy:
    """nginx with the default rendered config, one user, in front of the stand-in."""
    network, stub = stub_network
    users = UserFile(tmp_path_factory.mktemp("state") / "htpasswd")
    users.add(USER, PASSWORD)
    conf_volume, auth_volume = volumes(docker_client, test_images["nginx"], users)
    nginx = nginx_container(test_images["nginx"], network, conf_volume, auth_volume).waiting_for(
        HttpWaitStrategy(80, "/health").for_status_code(200))
    with nginx:
        yield Proxy(int(nginx.get_exposed_port(80)), users, auth_volume, nginx, stub, test_images["nginx"])

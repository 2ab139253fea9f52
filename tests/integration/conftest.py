"""A real nginx running the rendered config in front of the RumiTalk stand-in,
on a Docker network of its own, with the config and users in named volumes
written by rumistack's own volume code."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from click.testing import CliRunner
from testcontainers.core.wait_strategies import HttpWaitStrategy
from web import TlsPort, base_url, free_port

from rumistack.acme import WEBROOT
from rumistack.cli import cli
from rumistack.config import load_config
from rumistack.render import AUTH_DIR, CONF_DIR, MAIN_FILE, render
from rumistack.spec import LABEL_PROJECT, NGINX_GID
from rumistack.tls import PEM_FILE, TLS_DIR, Certificate, now, self_signed
from rumistack.users import UserFile
from rumistack.volumes import File, nginx_version, write_files
from testenv import TEST_LABELS

USER, PASSWORD, REALM = "alice", "correct horse battery", "RumiTalk Test"
SEED = Path(__file__).parent.parent / "data" / "seed"


@dataclass
class Proxy:
    port: int  # a web.TlsPort when the proxy speaks HTTPS
    users: UserFile
    auth_volume: str
    nginx: DockerContainer
    stub: DockerContainer
    image: str
    http_port: int | None = None  # with HTTPS: plain HTTP, which only redirects (and answers ACME challenges)
    ca_file: Path | None = None  # with HTTPS: the certificate to trust
    user: str = USER
    password: str = PASSWORD
    realm: str = REALM

    @property
    def url(self) -> str:
        return base_url(self.port)

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0]

    @property
    def tls(self) -> ssl.SSLContext | None:
        return getattr(self.port, "context", None)

    def push_users(self, client) -> None:
        write_files(client, self.image, "test", {self.auth_volume: {
            "htpasswd": File(self.users.content(), mode=0o640, gid=NGINX_GID)}})


@dataclass(frozen=True)
class Https:
    """What a proxy needs to speak HTTPS: its certificate, and files for the ACME webroot."""

    certificate: Certificate
    webroot: dict[str, File] = field(default_factory=dict)


@contextmanager
def running_proxy(docker_client, test_images, tmp_path: Path, files: dict[str, str],
                  user_file: File | None = None, https: Https | None = None) -> Iterator[Proxy]:
    """nginx running `files` as its config directory, in front of the stand-in; the auth volume
    holds one user, or `user_file` if given; with `https`, its certificate and webroot in their volumes."""
    suffix = uuid.uuid4().hex[:8]
    users = UserFile(tmp_path / "htpasswd")
    users.add(USER, PASSWORD)

    def volume(kind: str) -> str:
        return docker_client.volumes.create(f"rumistack-test-{kind}-{suffix}", labels=TEST_LABELS).name

    conf_volume, auth_volume = volume("conf"), volume("auth")
    contents = {
        conf_volume: {name: File(text.encode()) for name, text in files.items()},
        auth_volume: {"htpasswd": user_file or File(users.content(), mode=0o640, gid=NGINX_GID)},
    }
    mounts = {conf_volume: CONF_DIR, auth_volume: AUTH_DIR}
    if https:
        tls_volume, webroot_volume = volume("tls"), volume("webroot")
        contents[tls_volume] = {PEM_FILE: File(https.certificate.pem(), mode=0o600)}
        contents[webroot_volume] = https.webroot
        mounts.update({tls_volume: TLS_DIR, webroot_volume: WEBROOT})
    write_files(docker_client, test_images["nginx"], "test", contents)
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
                .with_kwargs(labels=TEST_LABELS)
                .with_exposed_ports(*((80, 443) if https else (80,)))
                .waiting_for(HttpWaitStrategy(443, "/health").using_tls(insecure=True) if https
                             else HttpWaitStrategy(80, "/health").for_status_code(200))
            )
            for name, target in mounts.items():
                nginx = nginx.with_volume_mapping(name, target, "ro")
            with nginx:
                port = int(nginx.get_exposed_port(80))
                proxy = Proxy(port, users, auth_volume, nginx, stub, test_images["nginx"])
                if https:
                    ca_file = tmp_path / "ca.pem"
                    ca_file.write_bytes(https.certificate.chain_pem())
                    context = ssl.create_default_context(cafile=ca_file)
                    proxy.port = TlsPort(int(nginx.get_exposed_port(443)), context)
                    proxy.http_port, proxy.ca_file = port, ca_file
                yield proxy


CHALLENGE = ("test-token", b"test-token.key-authorization")  # a file certbot would write into the webroot


@pytest.fixture(scope="module", params=["http", "https"])
def proxy(request, docker_client, test_images, tmp_path_factory) -> Iterator[Proxy]:
    """nginx with rumistack's rendered config (defaults but the realm), over plain HTTP (RUMISTACK_TLS=off)
    and over HTTPS. The HTTPS one is configured as in acme mode while its certificate is not issued yet:
    a self-signed certificate (for rumi.test and 127.0.0.1), and the webroot holding one challenge."""
    state = tmp_path_factory.mktemp("state")
    if request.param == "http":
        files = render(load_config("/nonexistent", environ={"RUMISTACK_REALM": REALM, "RUMISTACK_TLS": "off"}))
        with running_proxy(docker_client, test_images, state, files) as running:
            yield running
        return
    config = load_config("/nonexistent", environ={
        "RUMISTACK_REALM": REALM, "RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "rumi.test"})
    files = render(config, nginx_version=nginx_version(docker_client, test_images["nginx"], "test"))
    https = Https(self_signed(["rumi.test", "127.0.0.1"], now()),
                  {f".well-known/acme-challenge/{CHALLENGE[0]}": File(CHALLENGE[1])})
    with running_proxy(docker_client, test_images, state, files, https=https) as running:
        yield running


@pytest.fixture(scope="module")
def seed_proxy(docker_client, test_images, tmp_path_factory) -> Iterator[Proxy]:
    """nginx with the configuration RumiTalk's documentation gives (tests/data/seed)."""
    files = {p.name: p.read_text() for p in SEED.iterdir()}
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files) as running:
        yield running


@pytest.fixture
def stack_env(docker_client, test_images, tmp_path, monkeypatch):
    """A working directory and an environment for one project of its own (plain HTTP on loopback, so
    `up` asks nothing); removed afterwards."""
    project = f"rumistack-e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    monkeypatch.chdir(tmp_path)
    env = {
        "RUMISTACK_PROJECT": project,
        "RUMISTACK_NGINX_IMAGE": test_images["nginx"],
        "RUMITALK_IMAGE": test_images["rumitalk"],
        "RUMISTACK_HTTP_PORT": str(port),
        "RUMISTACK_BIND_ADDRESS": "127.0.0.1",
        "RUMISTACK_TLS": "off",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield project, port
    CliRunner().invoke(cli, ["down"])
    for volume in docker_client.volumes.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
        volume.remove(force=True)


def rumistack(*args: str, input: str | None = None):
    """The CLI, as a self-hoster runs it."""
    return CliRunner().invoke(cli, list(args), input=input)

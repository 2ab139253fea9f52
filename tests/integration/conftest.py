"""The subjects of the auth tests: a real nginx running a config in front of
the RumiTalk stand-in, on a Docker network of its own, with the config,
users and certificate in named volumes written by rumistack's own volume
code (testcontainers: rumistack's rendered config over plain HTTP or over
HTTPS, or the seed config from RumiTalk's documentation); and the compose
bundle, brought up by the commands of docs/compose.md ("run it"), which
serves HTTPS with its self-signed certificate. `proxy` is all three
rumistack stacks.

Each test module gets a fresh nginx of each stack (a new container, or the
bundle's nginx restarted), whose first request verifies the user's
credential: so the verification limits and the cache of verified
credentials start anew, and a module that sends many wrong passwords never
throttles the next one's right credential."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import docker
import pytest
import browser as browsing
import hardened
import provider
import verifying
from bundle import Bundle
from engine import engine_volumes
from clirun import PASSWORD as CLI_PASSWORD
from clirun import Project, free_port, new_project_name, rumistack
from docker.models.containers import Container
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import HttpWaitStrategy
from web import TlsPort, base_url, basic, send
from swarmnodes import swarm  # noqa: F401 (the session's test swarm, a fixture)

from rumistack.config import load_config
from rumistack.layout import AUTH_DIR, CONF_DIR, MAIN_FILE, PEM_FILE, TLS_DIR, VERIFIER_DIR, WEBROOT
from rumistack.probe import ProbeError
from rumistack.publish import users_file
from rumistack.render import TlsFacts, render
from rumistack.spec import (
    AUTH_VOLUME,
    COMPOSE_PROJECT,
    CONFIG_VOLUME,
    TLS_VOLUME,
    VERIFIER_VOLUME,
    WEBROOT_VOLUME,
)
from rumistack.tls import Certificate, now, self_signed
from rumistack.users import UserFile
from rumistack.volumes import EngineVolumes, File
from testenv import IN_CI, TEST_LABELS

USER, PASSWORD, REALM = "alice", "correct horse battery", "RumiTalk Test"
SEED = Path(__file__).parent.parent / "data" / "seed"


class Proxy(Protocol):
    """nginx with the rendered config, one user, in front of the stand-in."""

    port: int  # a web.TlsPort when the proxy speaks HTTPS
    ca_file: Path | None  # with HTTPS: the certificate to trust
    user: str
    password: str
    realm: str

    def add_user(self, name: str, password: str) -> None: ...

    def set_password(self, name: str, password: str) -> None: ...

    def delete_user(self, name: str) -> None: ...

    def nginx_started_at(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def scheme(self) -> str: ...

    @property
    def tls(self) -> ssl.SSLContext | None: ...


class _Urls:
    """What a proxy's port says about how to reach it."""

    port: int

    @property
    def url(self) -> str:
        return base_url(self.port)

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0]

    @property
    def tls(self) -> ssl.SSLContext | None:
        return getattr(self.port, "context", None)


@dataclass
class ContainerProxy(_Urls):
    port: int  # a web.TlsPort when the proxy speaks HTTPS
    users: UserFile
    volumes: EngineVolumes  # nginx's, which the proxy's user changes are published into
    nginx: DockerContainer
    stub: DockerContainer  # its port 3080 is published too, to compare with RumiTalk's own answers
    verifier: Container | None = None  # the verifier process nginx asks (None: the config does not use it)
    http_port: int | None = None  # with HTTPS: plain HTTP, which only redirects (and answers ACME challenges)
    ca_file: Path | None = None
    ai: DockerContainer | None = None  # the stand-in AI provider, when the stand-in has one
    provider_key: str | None = None  # the key the stand-in's openAI endpoint sends it
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

    def verifier_logs(self) -> str:
        return verifying.logs(self.verifier)

    def metrics(self) -> dict[str, int]:
        return verifying.metrics(self.verifier)

    def stub_requests(self) -> list[dict]:
        """Every request that reached the RumiTalk stand-in, from its log (one JSON line each on stdout)."""
        return _json_lines(self.stub)

    def ai_requests(self) -> list[dict]:
        """Every request the stand-in AI provider got: method, path, the Bearer key, the model."""
        return _json_lines(self.ai) if self.ai else []

    def _push(self) -> None:
        self.volumes.publish_user_file(AUTH_VOLUME, users_file(self.users))


@dataclass
class ComposeProxy(_Urls):
    bundle: Bundle
    client: docker.DockerClient
    user: str = USER
    password: str = PASSWORD
    realm: str = REALM

    @property
    def port(self) -> TlsPort:
        return self.bundle.port

    @property
    def ca_file(self) -> Path:
        return self.bundle.ca_file

    def add_user(self, name: str, password: str) -> None:
        self.bundle.compose("run", "--rm", "rumistack", "adduser", name, "--password-stdin", input=password + "\n")

    def set_password(self, name: str, password: str) -> None:
        self.bundle.compose("run", "--rm", "rumistack", "passwd", name, "--password-stdin", input=password + "\n")

    def delete_user(self, name: str) -> None:
        self.bundle.compose("run", "--rm", "rumistack", "deluser", name)

    def nginx(self) -> Container:
        return self._service("nginx")

    def _service(self, name: str) -> Container:
        labels = [f"{COMPOSE_PROJECT}={self.bundle.project}", f"com.docker.compose.service={name}"]
        (container,) = self.client.containers.list(filters={"label": labels})
        return container

    @property
    def provider_key(self) -> str:
        return BUNDLE_AI_KEY

    def stub_requests(self) -> list[dict]:
        """Every request that reached the bundle's RumiTalk stand-in, from its log, less the health checks
        its container runs itself (on its own loopback)."""
        return [r for r in _json_lines(self._service("rumitalk"))
                if not (r["path"] == "/health" and ["Host", "127.0.0.1:3080"] in r["headers"])]

    def ai_requests(self) -> list[dict]:
        """Every request the stand-in AI provider beside the bundle got."""
        return provider.requests(self.bundle.ai)

    def nginx_started_at(self) -> str:
        return self.nginx().attrs["State"]["StartedAt"]


def _json_lines(container: DockerContainer | Container) -> list[dict]:
    if isinstance(container, DockerContainer):
        container = container.get_wrapped_container()
    out = container.logs(stdout=True, stderr=False).decode(errors="replace")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


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
def compose_bundle(docker_client, test_images, image_env, compose_plugin, tmp_path_factory) -> Bundle:
    """The bundle up by docs/compose.md's commands for hosts without Python, as written."""
    bundle = Bundle.create(tmp_path_factory.mktemp("compose"), image_env, realm=REALM)
    # RumiTalk's settings point its openAI endpoint at the stand-in provider, on the bundle's network
    (bundle.root / "rumitalk.env").write_text(provider.settings(BUNDLE_AI_KEY))
    network = bundle.own_network(docker_client)
    try:
        bundle.ai = provider.start(docker_client, test_images["ai"], network, BUNDLE_AI_KEY)
        bundle.follow_docs()
        yield bundle
    finally:
        if bundle.ai is not None:
            bundle.ai.remove(force=True)  # before compose removes the network
        bundle.remove(docker_client)


@dataclass(frozen=True)
class Https:
    """What a proxy needs to speak HTTPS: its certificate, and files for the ACME webroot."""

    certificate: Certificate
    webroot: dict[str, File] = field(default_factory=dict)


AI_KEY = "sk-test-stand-in-provider-key"  # the key the stand-in RumiTalk gets for the stand-in provider
BUNDLE_AI_KEY = "sk-test-bundle-provider-key"  # the compose bundle's, in its rumitalk.env


@contextmanager
def running_proxy(docker_client, test_images, tmp_path: Path, files: dict[str, str],
                  user_file: File | None = None, https: Https | None = None,
                  stub_env: dict[str, str] | None = None, ai: bool = False,
                  hardening: bool = True, verifier: bool = True) -> Iterator[ContainerProxy]:
    """nginx running `files` as its config directory, in front of the stand-in; the auth volume
    holds one user, or `user_file` if given; with `https`, its certificate and webroot in their volumes.
    `stub_env` goes into the stand-in's environment. With `ai`, the stand-in AI provider runs on the
    same network (as `ai`) and the stand-in's openAI endpoint points at it with AI_KEY (unless
    `stub_env` says otherwise); the provider then refuses any other key. With `verifier`, the verifier
    runs beside nginx, sharing its socket volume (as in the stack)."""
    users = UserFile(tmp_path / "htpasswd")
    users.add(USER, PASSWORD)
    mounts = {CONFIG_VOLUME: CONF_DIR, AUTH_VOLUME: AUTH_DIR} | ({TLS_VOLUME: TLS_DIR, WEBROOT_VOLUME: WEBROOT} if https else {})
    volumes = engine_volumes(docker_client, test_images["nginx"], *mounts, VERIFIER_VOLUME)
    contents = {CONFIG_VOLUME: {name: File(text.encode()) for name, text in files.items()}}
    if https:
        contents[TLS_VOLUME] = {PEM_FILE: File(https.certificate.pem(), mode=0o600)}
        contents[WEBROOT_VOLUME] = https.webroot
    volumes.write(contents)
    volumes.publish_user_file(AUTH_VOLUME, user_file or users_file(users))
    env = dict(stub_env or {})
    with Network(docker_network_kw={"labels": TEST_LABELS}) as network, ExitStack() as started:
        ai_container = None
        if ai:
            key = env.setdefault("OPENAI_API_KEY", AI_KEY)
            env.setdefault("OPENAI_REVERSE_PROXY", "http://ai:8000/v1")
            ai_container = started.enter_context(
                DockerContainer(test_images["ai"])
                .with_network(network).with_network_aliases("ai")
                .with_env("AI_STUB_KEY", key)
                .with_kwargs(labels=TEST_LABELS)
                .waiting_for(HttpWaitStrategy(8000, "/health").for_status_code(200))
                .with_exposed_ports(8000))
        stub = (
            DockerContainer(test_images["rumitalk"])
            .with_network(network).with_network_aliases("rumitalk")
            .with_kwargs(labels=TEST_LABELS)
            .waiting_for(HttpWaitStrategy(3080, "/health").for_status_code(200))
            .with_exposed_ports(3080)
        )
        for name, value in env.items():
            stub = stub.with_env(name, value)
        verifier_container = None
        if verifier:
            verifier_container = verifying.start(docker_client, test_images["python"], network.name, volumes)
            started.callback(verifier_container.remove, force=True)
        with stub:
            nginx = (
                DockerContainer(test_images["nginx"])
                .with_network(network)
                .with_command(["nginx", "-c", f"{CONF_DIR}/{MAIN_FILE}", "-g", "daemon off;"])
                # hardened as the stack's nginx (unless `hardening` is off: a config not rumistack's
                # writes where nginx's defaults say), with its tmpfs mounts (for the cache of verified
                # credentials; the pid file and temporary paths)
                .with_kwargs(labels=TEST_LABELS, **(hardened.HARDENING if hardening else {}))
                .with_exposed_ports(*((80, 443) if https else (80,)))
                .waiting_for(HttpWaitStrategy(443, "/health").using_tls(insecure=True) if https
                             else HttpWaitStrategy(80, "/health").for_status_code(200))
            )
            for target, options in hardened.TMPFS.items():
                nginx = nginx.with_tmpfs_mount(target, options)  # its options, despite the name
            for name, target in mounts.items():
                nginx = nginx.with_volume_mapping(volumes.docker_name(name), target, "ro")
            nginx = nginx.with_volume_mapping(volumes.docker_name(VERIFIER_VOLUME), VERIFIER_DIR, "rw")
            with nginx:
                port = int(nginx.get_exposed_port(80))
                proxy = ContainerProxy(port, users, volumes, nginx, stub, verifier_container, ai=ai_container,
                                       provider_key=env.get("OPENAI_API_KEY"))
                if https:
                    proxy.ca_file = tmp_path / "ca.pem"
                    proxy.ca_file.write_bytes(https.certificate.chain_pem())
                    context = ssl.create_default_context(cafile=proxy.ca_file)
                    proxy.port, proxy.http_port = TlsPort(int(nginx.get_exposed_port(443)), context), port
                yield proxy


@pytest.fixture(scope="module")
def containers_proxy(docker_client, test_images, tmp_path_factory) -> Iterator[ContainerProxy]:
    """nginx with rumistack's rendered config (defaults but the realm) over plain HTTP (RUMISTACK_TLS=off),
    started by testcontainers."""
    files = render(load_config("/nonexistent", environ={"RUMISTACK_REALM": REALM, "RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files) as running:
        yield _fresh(running)


CHALLENGE = ("test-token", b"test-token.key-authorization")  # a file certbot would write into the webroot


@pytest.fixture(scope="module")
def https_proxy(docker_client, test_images, tmp_path_factory) -> Iterator[ContainerProxy]:
    """nginx with rumistack's rendered config (defaults but the realm) over HTTPS, started by testcontainers:
    configured as in acme mode while its certificate is not issued yet, with a self-signed certificate (for
    rumi.test and 127.0.0.1) and the webroot holding one challenge."""
    config = load_config("/nonexistent", environ={
        "RUMISTACK_REALM": REALM, "RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "rumi.test"})
    files = render(config, TlsFacts(nginx_version=engine_volumes(docker_client, test_images["nginx"]).nginx_version()))
    https = Https(self_signed(["rumi.test", "127.0.0.1"], now()),
                  {f".well-known/acme-challenge/{CHALLENGE[0]}": File(CHALLENGE[1])})
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files, https=https) as running:
        yield _fresh(running)


@pytest.fixture(scope="module")
def compose_proxy(compose_bundle, docker_client) -> ComposeProxy:
    """nginx with rumistack's rendered config (defaults but the realm), started by the compose bundle;
    restarted for each module."""
    proxy = ComposeProxy(compose_bundle, docker_client)
    proxy.nginx().restart(timeout=10)
    return _fresh(proxy)


@pytest.fixture(scope="module", params=["containers", "https", "compose"])
def proxy(request) -> Proxy:
    """The same tests against nginx started by testcontainers over plain HTTP and over HTTPS, and by the
    compose bundle (HTTPS, self-signed: its default)."""
    return request.getfixturevalue(f"{request.param}_proxy")


@pytest.fixture(scope="module")
def seed_proxy(docker_client, test_images, tmp_path_factory) -> Iterator[ContainerProxy]:
    """nginx with the configuration RumiTalk's documentation gives (tests/data/seed), over plain HTTP."""
    files = {p.name: p.read_text() for p in SEED.iterdir()}
    # the documentation's nginx writes its temporary files where the image's nginx puts them
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files,
                       hardening=False, verifier=False) as running:
        yield running


@pytest.fixture
def project(docker_client, image_env, tmp_path, monkeypatch) -> Iterator[Project]:
    """A working directory and an environment for one rumistack project of its own, run with
    the test images on a free loopback port over plain HTTP (RUMISTACK_TLS=off, so `up` asks
    nothing); its containers, network and volumes go afterwards."""
    running = Project(new_project_name(), free_port(), docker_client)
    monkeypatch.chdir(tmp_path)
    env = {**image_env, "RUMISTACK_PROJECT": running.name, "RUMISTACK_HTTP_PORT": str(running.port),
           "RUMISTACK_BIND_ADDRESS": "127.0.0.1", "RUMISTACK_TLS": "off"}
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


@pytest.fixture(scope="session")
def browser_certificate() -> Certificate:
    """The self-signed certificate (rumi.test, 127.0.0.1) of the proxies the browser tests visit."""
    return self_signed(["rumi.test", "127.0.0.1"], now())


@pytest.fixture(scope="session")
def playwright_driver(docker_client):
    """playwright, once Debian's Chromium and certutil are here; a failure in CI, else a skip."""
    missing = [what for what, there in (("/usr/bin/chromium (apt-get install chromium)", Path(browsing.CHROMIUM).exists()),
                                        ("certutil (apt-get install libnss3-tools)", shutil.which("certutil")))
               if not there]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("playwright (the test extras: pip install -e '.[test]')")
    if missing:
        message = f"no browser for the browser tests: missing {', '.join(missing)}; run scripts/test, which installs them"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def new_page(chromium, request):
    """new_page(credentials=(user, password) or None) -> a page of `chromium` (the test module's: it
    knows which certificate to trust) in a browser context of its own, whose
    Basic prompt is answered with the credentials as a person would type them. If the test fails, each
    page's screenshot and console log (with page errors and the app's own log of its API calls) go to
    test-artifacts/<test name>/."""
    opened = []

    def open_page(credentials: tuple[str, str] | None = None):
        context = chromium.new_context(
            http_credentials={"username": credentials[0], "password": credentials[1]} if credentials else None)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.on("requestfailed", lambda r: console.append(f"requestfailed: {r.method} {r.url} {r.failure}"))
        opened.append((context, page, console))
        return page

    yield open_page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        directory = browsing.artifact_dir(Path(request.config.rootpath), request.node.nodeid)
        directory.mkdir(parents=True, exist_ok=True)
        for n, (_, page, console) in enumerate(opened):
            try:
                page.screenshot(path=str(directory / f"page-{n}.png"), full_page=True)
                app_log = page.evaluate("() => JSON.stringify((window.rumitalk || {}).log || [])")
            except Exception as exc:  # a page that is gone still leaves its console log
                app_log = f"(unavailable: {exc})"
            (directory / f"console-{n}.log").write_text("\n".join([*console, f"app api log: {app_log}", ""]))
    for context, _, _ in opened:
        context.close()

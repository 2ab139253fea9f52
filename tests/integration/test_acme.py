"""ACME end to end against Pebble, Let's Encrypt's test ACME server, on a
Docker network of the test's own: the certificate is issued through the real
HTTP-01 challenge, which Pebble's validator fetches through our nginx while
Basic Auth guards everything else; a forced renewal is picked up by nginx
with a graceful reload while a load loop runs, without one failed request;
the account and the certificate survive `down`; a new ACME server gets a new
certificate. The test DNS server answers the test domain with the address of
the stack's nginx container, so nothing leaves the network."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from certs import make_ca
from clirun import PASSWORD, free_port, rumistack
from cryptography import x509
from docker.errors import NotFound
from docker.models.containers import Container
from web import TlsPort, basic, login, send

from rumistack import acme, stack
from rumistack.config import load_config
from rumistack.layout import ACME_CONFIG_DIR
from rumistack.probe import ProbeError, request, tls_context
from rumistack.progress import Progress
from rumistack.spec import LABEL_PROJECT, container_name, network_name
from rumistack.users import UserFile
from rumistack.volumes import File, archive
from testenv import TEST_LABELS, project_name

DOMAIN = "rumi.test"
ALICE = {"Authorization": basic("alice", PASSWORD)}
PEBBLE_CONFIG = {"pebble": {
    "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/pebble/cert.pem", "privateKey": "/pebble/key.pem",
    "httpPort": 80,  # where the validator knocks for HTTP-01: nginx's port 80 on the network
    "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False,
}}


def _ip(container: Container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def wait_for_log(container: Container, text: str, seconds: float = 30) -> None:
    """Wait until the container's output shows `text`."""
    deadline = time.monotonic() + seconds
    while text not in container.logs().decode(errors="replace"):
        container.reload()
        if container.status != "running" or time.monotonic() > deadline:
            raise AssertionError(f"{container.name} never said {text!r}:\n{container.logs().decode()[-2000:]}")
        time.sleep(0.1)


class PointDnsAtNginx(Progress):
    """`up`'s progress, used to point the test DNS at nginx's address as soon as its container exists;
    `up` asks the ACME server only after nginx is healthy, which comes later."""

    def __init__(self, client, project: str, network: str, dns: Container) -> None:
        self.client, self.project, self.network, self.dns = client, project, network, dns
        self.pointed: str | None = None

    def step(self, message: str) -> None:
        self._point()

    def waiting(self, states: dict[str, str], elapsed: float) -> None:
        self._point()

    def repoint(self) -> None:
        """Point the DNS at nginx now, whatever it was told since (a test may point it elsewhere)."""
        self.pointed = None
        self._point()

    def _point(self) -> None:
        try:
            nginx = self.client.containers.get(f"{self.project}-nginx")
        except NotFound:
            return
        address = _ip(nginx, self.network)
        if address and address != self.pointed:
            code, output = self.dns.exec_run(["wget", "-q", "-O", "-", "--post-data", json.dumps({"ip": address}),
                                              "http://127.0.0.1:8055/set-default-ipv4"])
            assert code == 0, output
            self.pointed = address


@dataclass
class Acme:
    """A stack in acme mode, its Pebble, and what it takes to talk to it."""

    client: object
    project: str
    network: str
    http_port: int
    https_port: int
    pebble: Container
    dns: Container
    root: bytes  # Pebble's root of the certificates it issues
    progress: PointDnsAtNginx
    log: list[str] = field(default_factory=list)

    @property
    def port(self) -> TlsPort:
        """nginx's HTTPS port, trusting Pebble's root for DOMAIN."""
        return TlsPort(self.https_port, tls_context_for(self.root), DOMAIN)

    def up(self) -> None:
        config = load_config()
        stack.up(config, UserFile(config.users_file), progress=self.progress)

    def served(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(send_raw(self.port, "/health").certificate)

    def container(self, service: str) -> Container:
        return self.client.containers.get(container_name(load_config(), service))

    def leave_network(self) -> None:
        """Take Pebble and its DNS server off the stack's network (so `down` can remove it)."""
        network = self.client.networks.get(self.network)
        for container in (self.pebble, self.dns):
            network.disconnect(container)

    def join_network(self) -> None:
        """Pebble and its DNS server on the stack's network, made anew if `down` removed it."""
        try:
            network = self.client.networks.get(self.network)
        except NotFound:
            network = _make_network(self.client, self.project)
        network.reload()
        attached = network.attrs.get("Containers") or {}
        for container, aliases in ((self.pebble, ["pebble", "pebble-two"]), (self.dns, ["challtestsrv"])):
            if container.id not in attached:
                network.connect(container, aliases=aliases)

    def remove_stack(self) -> None:
        """`down` with the volumes: no certificate, no ACME account, as before the first `up`."""
        self.leave_network()
        try:
            stack.down(load_config(), remove_volumes=True)
        finally:
            self.join_network()


def tls_context_for(root: bytes):
    context = tls_context()
    context.load_verify_locations(cadata=root.decode())
    return context


def send_raw(port: TlsPort, target: str, headers: dict[str, str] | None = None):
    return request(f"https://127.0.0.1:{port}", target, headers=headers, tls=port.context,
                   server_name=port.server_name, timeout=20)


def _make_network(client, project: str):
    """The stack's network, made before `up` (which uses it) so that Pebble and its DNS can be on it."""
    return client.networks.create(network_name(load_config("/nonexistent", environ={"RUMISTACK_PROJECT": project})),
                                  labels={LABEL_PROJECT: project, **TEST_LABELS})


@pytest.fixture(scope="module")
def acme_stack(docker_client, test_images, image_env, tmp_path_factory) -> Iterator[Acme]:
    """A project with its network made here, Pebble and its DNS server on it, and a user; the
    environment in acme mode against Pebble. Removed afterwards. No stack runs yet: each test
    starts from the state it needs (`issued`, `fresh`), so any test passes alone or in any order."""
    home = tmp_path_factory.mktemp("acme")
    project = project_name("acme")  # the containers `up` makes carry no test label, only the project's name
    network = _make_network(docker_client, project)

    ca = make_ca("pebble test CA")
    pebble_tls = ca.issue(["pebble", "pebble-two", "127.0.0.1"])
    (home / "pebble-ca.pem").write_bytes(ca.pem())

    dns = docker_client.containers.run(
        test_images["pebble"], ["pebble-challtestsrv", "-http01", "", "-https01", "", "-tlsalpn01", "",
                                "-dns01", ":8053", "-management", ":8055", "-defaultIPv6", ""],
        detach=True, labels=TEST_LABELS, network=network.name,
        networking_config={network.name: docker_client.api.create_endpoint_config(aliases=["challtestsrv"])})
    pebble = docker_client.containers.create(
        test_images["pebble"], ["pebble", "-config", "/pebble/config.json", "-dnsserver", "challtestsrv:8053"],
        labels=TEST_LABELS, network=network.name, ports={"15000/tcp": ("127.0.0.1", None)},
        environment={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"},
        networking_config={network.name: docker_client.api.create_endpoint_config(aliases=["pebble", "pebble-two"])})
    try:
        pebble.put_archive("/", archive({
            "config.json": File(json.dumps(PEBBLE_CONFIG).encode()),
            "cert.pem": File(pebble_tls.chain_pem()), "key.pem": File(pebble_tls.key_pem()),
        }, prefix="pebble"))
        pebble.start()
        wait_for_log(dns, "Starting management server")
        wait_for_log(pebble, "Listening on: 0.0.0.0:14000")
        pebble.reload()
        management = f"https://127.0.0.1:{pebble.ports['15000/tcp'][0]['HostPort']}"
        root = request(management, "/roots/0", tls=tls_context(home / "pebble-ca.pem")).body

        with pytest.MonkeyPatch.context() as env:
            env.chdir(home)
            for key, value in {
                **image_env, "RUMISTACK_PROJECT": project, "RUMISTACK_BIND_ADDRESS": "127.0.0.1",
                "RUMISTACK_HTTP_PORT": str(free_port()), "RUMISTACK_HTTPS_PORT": str(free_port()),
                "RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": DOMAIN,
                "RUMISTACK_ACME_DIRECTORY": "https://pebble:14000/dir", "RUMISTACK_ACME_EMAIL": "admin@rumi.test",
                "RUMISTACK_ACME_CA_BUNDLE": str(home / "pebble-ca.pem"),
            }.items():
                env.setenv(key, value)
            assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
            config = load_config()
            yield Acme(docker_client, project, network.name, config.http_port, config.https_port, pebble, dns,
                       root, PointDnsAtNginx(docker_client, project, network.name, dns))
    finally:
        # this project's objects only: Pebble and its DNS first, so that the network can go
        for container in [pebble, dns] + docker_client.containers.list(
                all=True, filters={"label": f"{LABEL_PROJECT}={project}"}):
            try:
                container.remove(force=True)
            except NotFound:
                pass
        for network in docker_client.networks.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
            network.remove()
        for volume in docker_client.volumes.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
            volume.remove(force=True)


@pytest.fixture
def fresh(acme_stack) -> Acme:
    """The project without a stack, its certificate or its ACME account, as before the first `up`."""
    acme_stack.remove_stack()
    return acme_stack


@pytest.fixture
def issued(acme_stack) -> Acme:
    """The stack up in the module's environment (Pebble's first directory, the first ports), serving
    a certificate Pebble issued, and the test DNS pointing at nginx. Whatever an earlier test left
    (another directory, another port, the DNS pointed elsewhere, the stack down), `up` puts it back:
    a certificate from another directory is replaced, a certificate still good is kept."""
    acme_stack.join_network()
    acme_stack.progress.pointed = None  # the DNS may point elsewhere: point it again at nginx's first step
    acme_stack.up()
    acme_stack.progress.repoint()
    assert acme_stack.served().issuer.rfc4514_string().startswith("CN=Pebble Intermediate CA")
    return acme_stack


@pytest.mark.usefixtures("fresh")
def test_the_certificate_is_issued_through_http01_passing_through_nginx_with_basic_auth_on(acme_stack):
    acme_stack.up()

    served = acme_stack.served()  # verified against Pebble's root for rumi.test
    assert served.issuer.rfc4514_string().startswith("CN=Pebble Intermediate CA")
    assert send(acme_stack.port, "/").status == 401  # Basic Auth guards the site
    assert send(acme_stack.port, "/", headers=ALICE).status == 200

    # Pebble's validator fetched the challenge from nginx's port 80, and RumiTalk never saw it
    nginx_log = acme_stack.container("nginx").logs().decode()
    assert '"GET /.well-known/acme-challenge/' in nginx_log and '" 200 ' in nginx_log.split(".well-known")[1]
    assert "acme-challenge" not in acme_stack.container("rumitalk").logs().decode()


@pytest.mark.usefixtures("issued")
def test_status_shows_the_issuer_and_the_expiry(acme_stack):
    status = rumistack("status")
    assert status.exit_code == 0, status.output
    assert "https: acme" in status.output
    assert f"certificate: for {DOMAIN}, issued by CN=Pebble Intermediate CA" in status.output
    assert f"expires {acme_stack.served().not_valid_after_utc:%Y-%m-%d}" in status.output
    assert "certbot" in status.output and "browsers will warn" not in status.output


@dataclass
class LoadResult:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    serials: dict[int, int] = field(default_factory=dict)  # serial of the certificate seen: how many answers
    first_seen: dict[int, float] = field(default_factory=dict)  # serial: when an answer first came with it
    streams: list[tuple[int, float]] = field(default_factory=list)  # serial and end of each complete stream

    def streams_across(self, old: int, new: int) -> int:
        """Streams that began on the old certificate and ended after nginx served the new one."""
        return sum(1 for serial, ended in self.streams if serial == old and ended > self.first_seen[new])


def _load(acme_stack: Acme, token: str, stop: threading.Event, result: LoadResult,
          lock: threading.Lock) -> list[threading.Thread]:
    """Workers sending requests over new TLS connections until `stop` (5,000 at most): short ones
    (exempt, API, Basic-authenticated), and streams of server-sent events three seconds long."""
    port, bearer = acme_stack.port, {"Authorization": f"Bearer {token}"}
    # one in sixteen with Basic credentials: nginx checks bcrypt (cost 12) on every such request
    short = [("/health", {}, 200), ("/api/convos", bearer, 200)] * 7 + [("/manifest.webmanifest", {}, 200),
                                                                      ("/", ALICE, 200)]

    def record(failure: str | None, certificate: bytes | None, stream: bool = False) -> None:
        with lock:
            result.requests += 1
            if failure:
                result.failures.append(failure)
            if certificate:
                serial = x509.load_der_x509_certificate(certificate).serial_number
                result.serials[serial] = result.serials.get(serial, 0) + 1
                result.first_seen.setdefault(serial, time.monotonic())
                if stream and not failure:
                    result.streams.append((serial, time.monotonic()))

    def shorts() -> None:
        n = 0
        while not stop.is_set() and result.requests < 5000:
            target, headers, expected = short[n % len(short)]
            n += 1
            try:
                answer = send_raw(port, target, headers)
                record(None if answer.status == expected else f"{target}: {answer.status}", answer.certificate)
            except (ProbeError, OSError) as exc:
                record(f"{target}: {exc}", None)

    def streams() -> None:
        while not stop.is_set() and result.requests < 5000:
            try:
                answer = send_raw(port, "/api/stream?events=30&gap=0.1", bearer)
                events = answer.body.count(b"data: ")
                record(None if (answer.status, events) == (200, 30) else f"stream: {answer.status}, {events} events",
                       answer.certificate, stream=True)
            except (ProbeError, OSError) as exc:
                record(f"stream: {exc}", None)

    workers = [threading.Thread(target=shorts) for _ in range(3)] + [threading.Thread(target=streams) for _ in range(3)]
    for worker in workers:
        worker.start()
    return workers


@pytest.mark.usefixtures("issued")
def test_a_forced_renewal_is_picked_up_by_nginx_under_load_without_a_failed_request(acme_stack):
    before = acme_stack.served().serial_number
    nginx = acme_stack.container("nginx")
    started = nginx.attrs["State"]["StartedAt"]
    token = login(acme_stack.port)
    stop, lock, result = threading.Event(), threading.Lock(), LoadResult()
    began = time.monotonic()
    workers = _load(acme_stack, token, stop, result, lock)
    try:
        time.sleep(1)
        renewing = time.monotonic()
        code, output = acme_stack.container("certbot").exec_run(
            [*acme.RENEW, "--force-renewal", "--no-random-sleep-on-renew"])
        renewal = time.monotonic() - renewing
        assert code == 0, output.decode()
        assert f"rumistack: installed the certificate for {DOMAIN}; nginx reloads" in output.decode()
        time.sleep(4)  # the streams under way finish, more requests come on the new certificate
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    after = acme_stack.served().serial_number
    print(f"\nload during the renewal: {result.requests} requests in {time.monotonic() - began:.1f} s, "
          f"{len(result.failures)} failed, answers by certificate {result.serials}, "
          f"{result.streams_across(before, after) if after in result.first_seen else 0} streams across the reload; "
          f"certbot renew took {renewal:.1f} s")

    assert result.failures == []
    assert after != before and set(result.serials) == {before, after}
    assert result.streams_across(before, after) >= 1  # requests in flight during the reload finished
    nginx.reload()
    assert nginx.attrs["State"]["StartedAt"] == started  # reloaded, never restarted


@pytest.mark.usefixtures("issued")
def test_the_account_and_the_certificate_survive_down_and_up_without_asking_again(acme_stack):
    served = acme_stack.served()
    acme_stack.leave_network()  # `down` removes the network; and the next up must not need the ACME server
    try:
        assert rumistack("down").exit_code == 0
        acme_stack.up()
        assert acme_stack.served() == served
    finally:
        acme_stack.join_network()
    code, listing = acme_stack.container("certbot").exec_run(
        ["sh", "-c", f"ls {ACME_CONFIG_DIR}/accounts/*/*/ && cat /proc/1/comm"])
    assert code == 0 and b"nginx" in listing  # the account kept, and certbot in nginx's process namespace


@pytest.mark.usefixtures("issued")
def test_certbot_follows_a_replaced_nginx_and_still_reloads_it(acme_stack, monkeypatch):
    nginx, certbot = acme_stack.container("nginx"), acme_stack.container("certbot")
    monkeypatch.setenv("RUMISTACK_HTTP_PORT", str(free_port()))  # a new port: nginx is replaced
    acme_stack.up()
    assert acme_stack.container("nginx").id != nginx.id
    assert acme_stack.container("certbot").id != certbot.id  # it joined the old nginx's process namespace
    before = acme_stack.served().serial_number
    code, output = acme_stack.container("certbot").exec_run([*acme.RENEW, "--force-renewal", "--no-random-sleep-on-renew"])
    assert code == 0 and b"nginx reloads" in output, output.decode()
    deadline = time.monotonic() + 5
    while acme_stack.served().serial_number == before:
        assert time.monotonic() < deadline, "the new nginx never served the renewed certificate"
        time.sleep(0.05)


@pytest.mark.usefixtures("issued")
def test_a_new_acme_server_gets_a_new_certificate(acme_stack, monkeypatch):
    before = acme_stack.served()
    monkeypatch.setenv("RUMISTACK_ACME_DIRECTORY", "https://pebble-two:14000/dir")
    acme_stack.up()
    assert acme_stack.served().serial_number != before.serial_number
    code, renewal = acme_stack.container("certbot").exec_run(["cat", f"{ACME_CONFIG_DIR}/renewal/{DOMAIN}.conf"])
    assert acme.server_of(renewal) == "https://pebble-two:14000/dir"


@pytest.mark.usefixtures("issued")
def test_a_domain_that_does_not_point_here_is_one_clear_error_and_nginx_keeps_serving(acme_stack, monkeypatch):
    """The test DNS answers with an address where nothing listens, and a new ACME server makes `up`
    ask for a certificate although the kept one is good: validation fails."""
    served = acme_stack.served()
    code, _ = acme_stack.dns.exec_run(["wget", "-q", "-O", "-", "--post-data", json.dumps({"ip": "127.0.0.1"}),
                                       "http://127.0.0.1:8055/set-default-ipv4"])
    assert code == 0
    monkeypatch.setenv("RUMISTACK_ACME_DIRECTORY", "https://pebble-two:14000/dir")
    result = rumistack("up")
    assert result.exit_code == 4
    assert result.output.count("error: ") == 1
    assert f"error: the ACME server issued no certificate for {DOMAIN}, so nginx serves the previous one" in result.output
    assert f"check that {DOMAIN} points to this host and that port 80 reaches" in result.output
    assert acme_stack.served() == served

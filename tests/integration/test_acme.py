"""ACME end to end against Pebble, Let's Encrypt's test ACME server, on a
Docker network of the test's own: the certificate is issued through the real
HTTP-01 challenge, which Pebble's validator fetches through our nginx while
Basic Auth guards everything else; a forced renewal is picked up by nginx
with a graceful reload while a load loop runs, without one failed request;
the account and the certificate survive `down`; a new ACME server gets a new
certificate. The test DNS server answers the test domain with the address of
the stack's nginx container, so nothing leaves the network."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from clirun import PASSWORD, free_port, rumistack
from cryptography import x509
from docker.errors import NotFound
from docker.models.containers import Container
from pebble import DIRECTORY, DNS_ALIASES, DOMAIN, PEBBLE_ALIASES, SECOND_DIRECTORY, Pebble, ip, renew_under_load, \
    start_pebble, tls_context_for
from pebble import served as served_on
from web import TlsPort, basic, login, send

from rumistack import acme, stack
from rumistack.config import load_config
from rumistack.layout import ACME_CONFIG_DIR
from rumistack.progress import Progress
from rumistack.spec import LABEL_PROJECT, container_name, network_name
from rumistack.users import UserFile
from testenv import TEST_LABELS, project_name

ALICE = {"Authorization": basic("alice", PASSWORD)}


class PointDnsAtNginx(Progress):
    """`up`'s progress, used to point the test DNS at nginx's address as soon as its container exists;
    `up` asks the ACME server only after nginx is healthy, which comes later."""

    def __init__(self, client, project: str, network: str, pebble: Pebble) -> None:
        self.client, self.project, self.network, self.pebble = client, project, network, pebble
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
        address = ip(nginx, self.network)
        if address and address != self.pointed:
            self.pebble.point(address)
            self.pointed = address


@dataclass
class Acme:
    """A stack in acme mode, its Pebble, and what it takes to talk to it."""

    client: object
    project: str
    network: str
    http_port: int
    https_port: int
    server: Pebble
    progress: PointDnsAtNginx

    @property
    def port(self) -> TlsPort:
        """nginx's HTTPS port, trusting Pebble's root for DOMAIN."""
        return TlsPort(self.https_port, tls_context_for(self.server.root), DOMAIN)

    def up(self) -> None:
        config = load_config()
        stack.up(config, UserFile(config.users_file), progress=self.progress)

    def served(self) -> x509.Certificate:
        return served_on(self.port)

    def container(self, service: str) -> Container:
        return self.client.containers.get(container_name(load_config(), service))

    def leave_network(self) -> None:
        """Take Pebble and its DNS server off the stack's network (so `down` can remove it)."""
        network = self.client.networks.get(self.network)
        for container in (self.server.pebble, self.server.dns):
            network.disconnect(container)

    def join_network(self) -> None:
        """Pebble and its DNS server on the stack's network, made anew if `down` removed it."""
        try:
            network = self.client.networks.get(self.network)
        except NotFound:
            network = _make_network(self.client, self.project)
        network.reload()
        attached = network.attrs.get("Containers") or {}
        for container, aliases in ((self.server.pebble, PEBBLE_ALIASES), (self.server.dns, DNS_ALIASES)):
            if container.id not in attached:
                network.connect(container, aliases=aliases)

    def remove_stack(self) -> None:
        """`down` with the volumes: no certificate, no ACME account, as before the first `up`."""
        self.leave_network()
        try:
            stack.down(load_config(), remove_volumes=True)
        finally:
            self.join_network()


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

    try:
        server = start_pebble(docker_client, test_images["pebble"], network.name, home)
    except BaseException:
        network.remove()
        raise
    try:
        with pytest.MonkeyPatch.context() as env:
            env.chdir(home)
            for key, value in {
                **image_env, "RUMISTACK_PROJECT": project, "RUMISTACK_BIND_ADDRESS": "127.0.0.1",
                "RUMISTACK_HTTP_PORT": str(free_port()), "RUMISTACK_HTTPS_PORT": str(free_port()),
                "RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": DOMAIN,
                "RUMISTACK_ACME_DIRECTORY": DIRECTORY, "RUMISTACK_ACME_EMAIL": "admin@rumi.test",
                "RUMISTACK_ACME_CA_BUNDLE": str(server.ca_file),
            }.items():
                env.setenv(key, value)
            assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
            config = load_config()
            yield Acme(docker_client, project, network.name, config.http_port, config.https_port, server,
                       PointDnsAtNginx(docker_client, project, network.name, server))
    finally:
        # this project's objects only: Pebble and its DNS first, so that the network can go
        for container in [server.pebble, server.dns] + docker_client.containers.list(
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


@pytest.mark.usefixtures("issued")
def test_a_forced_renewal_is_picked_up_by_nginx_under_load_without_a_failed_request(acme_stack):
    nginx = acme_stack.container("nginx")
    started = nginx.attrs["State"]["StartedAt"]
    before, after, result = renew_under_load(acme_stack.port, acme_stack.container("certbot"), ("alice", PASSWORD),
                                             login(acme_stack.port))
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
    monkeypatch.setenv("RUMISTACK_ACME_DIRECTORY", SECOND_DIRECTORY)
    acme_stack.up()
    assert acme_stack.served().serial_number != before.serial_number
    code, renewal = acme_stack.container("certbot").exec_run(["cat", f"{ACME_CONFIG_DIR}/renewal/{DOMAIN}.conf"])
    assert acme.server_of(renewal) == SECOND_DIRECTORY


@pytest.mark.usefixtures("issued")
def test_a_domain_that_does_not_point_here_is_one_clear_error_and_nginx_keeps_serving(acme_stack, monkeypatch):
    """The test DNS answers with an address where nothing listens, and a new ACME server makes `up`
    ask for a certificate although the kept one is good: validation fails."""
    served = acme_stack.served()
    acme_stack.server.point("127.0.0.1")
    monkeypatch.setenv("RUMISTACK_ACME_DIRECTORY", SECOND_DIRECTORY)
    result = rumistack("up")
    assert result.exit_code == 4
    assert result.output.count("error: ") == 1
    assert f"error: the ACME server issued no certificate for {DOMAIN}, so nginx serves the previous one" in result.output
    assert f"check that {DOMAIN} points to this host and that port 80 reaches" in result.output
    assert acme_stack.served() == served

"""The compose bundle with RUMISTACK_TLS=acme, against Pebble (Let's Encrypt's
test ACME server) on the bundle's own network: docs/compose.md's commands
run as written, with the mode's lines added to .env as a self-hoster would;
the bundle's certbot gets the certificate by itself through the HTTP-01
challenge, which Pebble's validator fetches through our nginx while Basic
Auth guards everything else. Then the auth matrix and `rumistack check`, a
forced renewal under load without a failed request, and compose and
`rumistack up` taking over from each other with the same account and
certificate, Pebble asked nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from bundle import Bundle, docs_command, snapshot
from click.testing import CliRunner
from docker.errors import APIError, NotFound
from pebble import DIRECTORY, DNS_ALIASES, DOMAIN, PEBBLE_ALIASES, SECOND_DIRECTORY, Pebble, ip, renew_under_load, \
    served, start_pebble, tls_context_for
from testenv import TEST_LABELS
from web import TlsPort, basic, login, send

from rumistack import acme
from rumistack.check import audit
from rumistack.cli import cli
from rumistack.probe import ProbeError
from rumistack.spec import LABEL_PROJECT, LABEL_SERVICE, network_labels

PASSWORD = "correct horse battery"
ALICE = {"Authorization": basic("alice", PASSWORD)}
PEBBLE_ISSUER = "CN=Pebble Intermediate CA"
# the mode, as a self-hoster adds it to .env; the CA of Pebble's HTTPS is in the project directory
MODE = (f"RUMISTACK_TLS=acme\nRUMISTACK_DOMAIN={DOMAIN}\nRUMISTACK_ACME_DIRECTORY={DIRECTORY}\n"
        "RUMISTACK_ACME_EMAIL=admin@rumi.test\nRUMISTACK_ACME_CA_BUNDLE=pebble-ca.pem\nCOMPOSE_PROFILES=acme\n")


class PointDnsAtNginx(threading.Thread):
    """Points the test DNS at the project's nginx, whoever made it (compose or `up`), as soon as it
    is on the network: certbot asks once nginx answers, so the address must be there by then."""

    def __init__(self, client, pebble: Pebble, project: str, network: str) -> None:
        super().__init__(daemon=True)
        self.client, self.pebble, self.project, self.network = client, pebble, project, network
        self.stopped = threading.Event()

    def run(self) -> None:
        pointed = None
        while not self.stopped.wait(0.1):
            try:
                found = self.client.containers.list(filters={"label": [f"{LABEL_PROJECT}={self.project}",
                                                                       f"{LABEL_SERVICE}=nginx"]})
                address = ip(found[0], self.network) if found else None
            except (NotFound, APIError, KeyError):
                continue  # replaced or not on the network yet
            if address and address != pointed:
                self.pebble.point(address)
                pointed = address


def _service(client, bundle: Bundle, service: str):
    (container,) = client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={bundle.project}",
                                                                       f"{LABEL_SERVICE}={service}"]})
    return container


def _wait_for_pebbles_certificate(port: TlsPort, seconds: float = 10) -> None:
    """compose's `up --wait` returns once certbot's first attempt is over: its deploy hook installed the
    certificate and sent nginx SIGHUP, and nginx's new workers serve it a moment later."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if served(port).issuer.rfc4514_string().startswith(PEBBLE_ISSUER):
                return
        except (ProbeError, OSError):
            pass  # the placeholder: not verified by Pebble's root
        assert time.monotonic() < deadline, "nginx never served a certificate from Pebble"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def acme_bundle(docker_client, test_images, image_env, compose_plugin, tmp_path_factory) -> Iterator[Bundle]:
    """The bundle up by docs/compose.md's commands in acme mode, serving the certificate its certbot got
    from Pebble (on the bundle's network, made here so Pebble can be on it)."""
    bundle = Bundle.create(tmp_path_factory.mktemp("compose-acme"), image_env)
    network = bundle.own_network(docker_client)
    pebble = start_pebble(docker_client, test_images["pebble"], network, bundle.root)
    pointer = PointDnsAtNginx(docker_client, pebble, bundle.project, network)
    pointer.start()
    bundle.pebble, bundle.network = pebble, network
    bundle.tls = TlsPort(bundle.https_port, tls_context_for(pebble.root), DOMAIN)
    try:
        bundle.follow_docs(MODE)
        _wait_for_pebbles_certificate(bundle.tls)
        yield bundle
    finally:
        pointer.stopped.set()
        pointer.join(timeout=5)
        pebble.remove()  # before compose removes the network
        bundle.remove(docker_client)


def test_render_says_which_profile_acme_needs(acme_bundle):
    assert ("this configuration needs compose's profile acme: put COMPOSE_PROFILES=acme into .env, or start it "
            "with: docker compose --project-directory . -f compose/docker-compose.yml --profile acme up -d --wait"
            in acme_bundle.rendered)


def test_compose_config_is_valid_without_a_warning_in_acme_mode(acme_bundle):
    checked = acme_bundle.compose("config", "--quiet")
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_the_bundles_certbot_got_pebbles_certificate_through_nginx_with_basic_auth_on(acme_bundle, docker_client):
    certificate = served(acme_bundle.tls)  # verified against Pebble's root, for rumi.test
    assert certificate.issuer.rfc4514_string().startswith(PEBBLE_ISSUER)
    assert send(acme_bundle.tls, "/").status == 401  # Basic Auth guards the site
    assert send(acme_bundle.tls, "/", headers=ALICE).status == 200
    assert f"{acme.DONE} obtained" in _service(docker_client, acme_bundle, "certbot").logs().decode()
    # Pebble's validator fetched the challenge from nginx's port 80, and RumiTalk never saw it
    nginx_log = _service(docker_client, acme_bundle, "nginx").logs().decode()
    assert '"GET /.well-known/acme-challenge/' in nginx_log and '" 200 ' in nginx_log.split(".well-known/acme")[1]
    assert "acme-challenge" not in _service(docker_client, acme_bundle, "rumitalk").logs().decode()


def test_the_auth_matrix_and_rumistack_check_pass_against_the_bundle(acme_bundle):
    port = acme_bundle.tls
    for path in ("/", "/c/new", "/healthz", "/api/convos"):
        assert send(port, path).status == 401, path
    assert send(port, "/", headers={"Authorization": basic("alice", "wrong")}).status == 401
    assert send(port, "/", headers=ALICE).status == 200
    assert send(port, "/health").status == 200
    # `check` reaches nginx at 127.0.0.1, not by the certificate's name: the chain is verified, the name not
    context = tls_context_for(acme_bundle.pebble.root)
    context.check_hostname = False
    url = f"https://127.0.0.1:{acme_bundle.https_port}"
    failures = {f"{r.case.target} [{r.case.credentials}]": r.note for r in audit(url, "alice", PASSWORD, tls=context)
                if not r.ok}
    assert failures == {}
    checked = CliRunner().invoke(cli, ["check", url, "--user", "alice", "--password-stdin", "--insecure"],
                                 input=PASSWORD + "\n")
    assert checked.exit_code == 0 and ": 0 failed" in checked.output, checked.output


def test_a_forced_renewal_under_load_loses_no_request(acme_bundle, docker_client):
    nginx = _service(docker_client, acme_bundle, "nginx")
    started = nginx.attrs["State"]["StartedAt"]
    token = login(acme_bundle.tls)
    before, after, result = renew_under_load(acme_bundle.tls, _service(docker_client, acme_bundle, "certbot"),
                                             ("alice", PASSWORD), token)
    assert result.failures == []
    assert after != before and set(result.serials) == {before, after}
    assert result.streams_across(before, after) >= 1  # requests in flight during the reload finished
    nginx.reload()
    assert nginx.attrs["State"]["StartedAt"] == started  # reloaded, never restarted


def _wait_for_log(container, text: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while text not in container.logs().decode():
        assert time.monotonic() < deadline, container.logs().decode()
        time.sleep(0.2)


def test_a_failed_first_attempt_shows_in_certbots_log_and_a_restart_asks_again(acme_bundle, docker_client):
    """.env names another ACME server (so the kept certificate does not count) while the domain points
    where nothing listens: `up --wait` returns, nginx keeps serving the previous certificate, certbot's
    log says why; with the domain pointing here again, `restart certbot` gets the certificate."""
    nginx, before = _service(docker_client, acme_bundle, "nginx"), served(acme_bundle.tls)
    acme_bundle.pebble.point("127.0.0.1")
    env = acme_bundle.root / ".env"
    env.write_text(env.read_text().replace(f"RUMISTACK_ACME_DIRECTORY={DIRECTORY}\n",
                                           f"RUMISTACK_ACME_DIRECTORY={SECOND_DIRECTORY}\n"))
    acme_bundle.sh(docs_command(" run --rm rumistack render"))
    acme_bundle.compose("up", "-d", "--wait")  # certbot is new: its command names the new server
    certbot = _service(docker_client, acme_bundle, "certbot")
    said = certbot.logs().decode()
    assert f"{acme.DONE} failed" in said and f"asking {SECOND_DIRECTORY} for a certificate" in said
    assert served(acme_bundle.tls) == before

    acme_bundle.pebble.point(ip(nginx, acme_bundle.network))
    acme_bundle.compose("restart", "certbot")
    _wait_for_log(certbot, f"{acme.DONE} obtained")
    deadline = time.monotonic() + 10  # the deploy hook's SIGHUP: nginx's new workers serve it a moment later
    while served(acme_bundle.tls).serial_number == before.serial_number:
        assert time.monotonic() < deadline, "nginx never served the new certificate"
        time.sleep(0.2)


def _down_keeping_pebble(bundle: Bundle, client) -> None:
    """`rumistack down` (which removes the network) with Pebble and its DNS kept: off the network, and on
    the network made anew for compose."""
    network = client.networks.get(bundle.network)
    for container in (bundle.pebble.pebble, bundle.pebble.dns):
        network.disconnect(container)
    bundle.sh("rumistack down")
    network = client.networks.create(bundle.network, driver="bridge",
                                     labels={**network_labels(bundle.project), **TEST_LABELS})
    for container, aliases in ((bundle.pebble.pebble, PEBBLE_ALIASES), (bundle.pebble.dns, DNS_ALIASES)):
        network.connect(container, aliases=aliases)


def test_compose_and_rumistack_up_take_over_from_each_other_without_asking_the_acme_server(acme_bundle,
                                                                                          docker_client):
    """The same definitions, nginx config, user file and certificate, and Pebble asked nothing, from compose
    to `up` and back. The last test of the module (it stops and starts the stack)."""
    # compose's stack after the docs' "after a change" (render again, reload): the config names the
    # certificate certbot installed, as `up` renders it
    acme_bundle.sh(docs_command(" run --rm rumistack render"))
    acme_bundle.sh(docs_command(" kill -s HUP nginx"))
    by_compose = snapshot(docker_client, acme_bundle.project)
    assert set(by_compose) == {"mongodb", "rumitalk", "verifier", "nginx", "certbot", "nginx files"}
    serial, asked = served(acme_bundle.tls).serial_number, acme_bundle.pebble.requests()
    assert asked > 0  # the count sees requests: those of the first certificate and of the renewal

    acme_bundle.compose("rm", "--stop", "--force")  # keeps the network, where Pebble is
    acme_bundle.sh("rumistack up")
    assert snapshot(docker_client, acme_bundle.project) == by_compose
    assert f"{acme.DONE} kept" in _service(docker_client, acme_bundle, "certbot").logs().decode()
    assert served(acme_bundle.tls).serial_number == serial
    assert acme_bundle.pebble.requests() == asked

    _down_keeping_pebble(acme_bundle, docker_client)
    acme_bundle.sh(docs_command(" run --rm rumistack render"))
    acme_bundle.compose("up", "-d", "--wait")
    _wait_for_log(_service(docker_client, acme_bundle, "certbot"), f"{acme.DONE} kept")
    assert snapshot(docker_client, acme_bundle.project) == by_compose
    assert served(acme_bundle.tls).serial_number == serial
    assert acme_bundle.pebble.requests() == asked

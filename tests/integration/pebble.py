"""Pebble, Let's Encrypt's test ACME server, with its DNS test server, on a
Docker network a test made; and the load loop that runs while certbot
renews. Shared by test_acme.py (`rumistack up`) and test_compose_acme.py
(the compose bundle).

The DNS test server answers every name with one address, which the test
points at the stack's nginx container, so Pebble's validator fetches the
HTTP-01 challenge from our nginx and nothing leaves the network."""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from certs import make_ca
from cryptography import x509
from docker.models.containers import Container
from testenv import TEST_LABELS
from web import TlsPort, basic

from rumistack import acme
from rumistack.probe import ProbeError, request, tls_context
from rumistack.volumes import File, archive

DOMAIN = "rumi.test"
DIRECTORY = "https://pebble:14000/dir"
SECOND_DIRECTORY = "https://pebble-two:14000/dir"  # the same Pebble by another name: another ACME server to certbot
PEBBLE_ALIASES = ["pebble", "pebble-two"]
DNS_ALIASES = ["challtestsrv"]
PEBBLE_CONFIG = {"pebble": {
    "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
    "certificate": "/pebble/cert.pem", "privateKey": "/pebble/key.pem",
    "httpPort": 80,  # where the validator knocks for HTTP-01: nginx's port 80 on the network
    "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False,
}}
HANDLED = "-> calling handler()"  # Pebble's log line for each request its ACME API answers


def ip(container: Container, network: str) -> str:
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


@dataclass
class Pebble:
    """Pebble and its DNS server, on `network`."""

    pebble: Container
    dns: Container
    ca_file: Path  # the CA of Pebble's own HTTPS, which certbot is told to trust
    root: bytes  # the root of the certificates Pebble issues

    def point(self, address: str) -> None:
        """The DNS server answers every name with `address`."""
        code, output = self.dns.exec_run(["wget", "-q", "-O", "-", "--post-data", json.dumps({"ip": address}),
                                          "http://127.0.0.1:8055/set-default-ipv4"])
        assert code == 0, output

    def requests(self) -> int:
        """How many requests Pebble's ACME API has answered so far."""
        return self.pebble.logs().decode(errors="replace").count(HANDLED)

    def remove(self) -> None:
        for container in (self.pebble, self.dns):
            container.remove(force=True)


def start_pebble(client, image: str, network: str, home: Path) -> Pebble:
    """Pebble and its DNS server on `network`, answering; the CA of its HTTPS in home/pebble-ca.pem."""
    ca = make_ca("pebble test CA")
    pebble_tls = ca.issue([*PEBBLE_ALIASES, "127.0.0.1"])
    ca_file = home / "pebble-ca.pem"
    ca_file.write_bytes(ca.pem())
    dns = client.containers.run(
        image, ["pebble-challtestsrv", "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-dns01", ":8053", "-management", ":8055", "-defaultIPv6", ""],
        detach=True, labels=TEST_LABELS, network=network,
        networking_config={network: client.api.create_endpoint_config(aliases=DNS_ALIASES)})
    pebble = client.containers.create(
        image, ["pebble", "-config", "/pebble/config.json", "-dnsserver", "challtestsrv:8053"],
        labels=TEST_LABELS, network=network, ports={"15000/tcp": ("127.0.0.1", None)},
        environment={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"},
        networking_config={network: client.api.create_endpoint_config(aliases=PEBBLE_ALIASES)})
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
        root = request(management, "/roots/0", tls=tls_context(ca_file)).body
    except BaseException:
        for container in (pebble, dns):
            container.remove(force=True)
        raise
    return Pebble(pebble, dns, ca_file, root)


def tls_context_for(root: bytes) -> ssl.SSLContext:
    context = tls_context()
    context.load_verify_locations(cadata=root.decode())
    return context


def send_raw(port: TlsPort, target: str, headers: dict[str, str] | None = None):
    return request(f"https://127.0.0.1:{port}", target, headers=headers, tls=port.context,
                   server_name=port.server_name, timeout=20)


def served(port: TlsPort) -> x509.Certificate:
    """The certificate nginx serves on `port`, verified by port's context."""
    return x509.load_der_x509_certificate(send_raw(port, "/health").certificate)


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


def load(port: TlsPort, user: tuple[str, str], token: str, stop: threading.Event, result: LoadResult,
         lock: threading.Lock) -> list[threading.Thread]:
    """Workers sending requests over new TLS connections until `stop` (5,000 at most): short ones
    (exempt, API, Basic-authenticated as `user`), and streams of server-sent events three seconds long."""
    bearer, credentials = {"Authorization": f"Bearer {token}"}, {"Authorization": basic(*user)}
    # one in sixteen with Basic credentials: nginx checks bcrypt (cost 12) on every such request
    short = [("/health", {}, 200), ("/api/convos", bearer, 200)] * 7 + [("/manifest.webmanifest", {}, 200),
                                                                      ("/", credentials, 200)]

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


def renew_under_load(port: TlsPort, certbot: Container, user: tuple[str, str], token: str) -> tuple[int, int, LoadResult]:
    """A forced renewal in the certbot container while the load loop runs: the serials served before
    and after, and what the loop saw."""
    before = served(port).serial_number
    stop, lock, result = threading.Event(), threading.Lock(), LoadResult()
    began = time.monotonic()
    workers = load(port, user, token, stop, result, lock)
    try:
        time.sleep(1)
        renewing = time.monotonic()
        code, output = certbot.exec_run([*acme.RENEW, "--force-renewal", "--no-random-sleep-on-renew"])
        renewal = time.monotonic() - renewing
        assert code == 0, output.decode()
        assert f"rumistack: installed the certificate for {DOMAIN}; nginx reloads" in output.decode()
        time.sleep(4)  # the streams under way finish, more requests come on the new certificate
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    after = served(port).serial_number
    print(f"\nload during the renewal: {result.requests} requests in {time.monotonic() - began:.1f} s, "
          f"{len(result.failures)} failed, answers by certificate {result.serials}, "
          f"{result.streams_across(before, after) if after in result.first_seen else 0} streams across the reload; "
          f"certbot renew took {renewal:.1f} s")
    return before, after, result

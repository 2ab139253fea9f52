"""HTTPS in real nginx: port 80 only redirects (but for ACME challenges),
TLS 1.2 and 1.3 only, HTTP/2, HSTS only when asked, and the config on
Debian's nginx 1.22 and on nginx 1.26."""

from __future__ import annotations

import socket
import ssl
import threading

import hardened
import pytest
from conftest import CHALLENGE, REALM, Https, running_proxy
from engine import engine_volumes
from web import basic, send

from rumistack.config import load_config
from rumistack.layout import CONF_DIR, MAIN_FILE, PEM_FILE, TLS_DIR
from rumistack.render import TlsFacts, render
from rumistack.tls import now, self_signed
from rumistack.volumes import File, archive
from testenv import TEST_LABELS

@pytest.mark.parametrize("target", ["/", "/c/new?x=1", "/api/convos", "/health", "/manifest.webmanifest",
                                    "/.well-known/", "/.well-known/acme-challengex", "/%2e/health"])
def test_plain_http_redirects_everything_but_challenges_to_https(https_proxy, target):
    credentials = {"Authorization": basic(https_proxy.user, https_proxy.password)}
    answer = send(https_proxy.http_port, target, headers=credentials)
    assert answer.status == 301
    assert answer.headers["Location"] == f"https://127.0.0.1:8443{target}"  # the configured HTTPS port
    assert answer.seen is None


@pytest.mark.parametrize("credentials", ["none", "wrong"])
def test_acme_challenges_are_answered_over_plain_http_without_basic_auth_and_never_reach_rumitalk(https_proxy,
                                                                                                   credentials):
    headers = {"Authorization": basic(https_proxy.user, "wrong")} if credentials == "wrong" else {}
    token, content = CHALLENGE
    found = send(https_proxy.http_port, f"/.well-known/acme-challenge/{token}", headers=headers)
    assert (found.status, found.body, found.seen) == (200, content, None)
    assert found.headers["Content-Type"] == "text/plain"
    missing = send(https_proxy.http_port, "/.well-known/acme-challenge/no-such-token", headers=headers)
    assert (missing.status, missing.seen) == (404, None)


def _handshake(port: int, version: ssl.TLSVersion, cafile: str | None = None, alpn: list[str] | None = None) -> str:
    """Connect with exactly `version`; return the negotiated version and protocol, or raise ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = version
    context.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer what old servers speak
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return f"{tls.version()} {tls.selected_alpn_protocol()}"


@pytest.fixture(scope="module")
def old_tls_server(tmp_path_factory):
    """A local TLS server that speaks TLS 1.0 to 1.3: shows that this client can offer the old versions."""
    pem = tmp_path_factory.mktemp("old-tls") / "server.pem"
    pem.write_bytes(self_signed(["127.0.0.1"], now()).pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(pem)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
def test_tls_1_0_and_1_1_are_refused(https_proxy, old_tls_server, version):
    assert _handshake(old_tls_server, version) == f"{version.name.replace('_', '.')} None"  # the client speaks it
    with pytest.raises(ssl.SSLError):
        _handshake(https_proxy.port, version, str(https_proxy.ca_file))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"])
def test_tls_1_2_and_1_3_are_accepted_with_http2(https_proxy, version):
    negotiated = _handshake(https_proxy.port, version, str(https_proxy.ca_file), alpn=["h2", "http/1.1"])
    assert negotiated == f"{version.name.replace('_', '.')} h2"


def test_a_certificate_not_publicly_trusted_gets_no_hsts(https_proxy):
    answer = send(https_proxy.port, "/health")
    assert answer.status == 200 and "Strict-Transport-Security" not in answer.headers


def test_a_publicly_trusted_certificate_gets_hsts_on_every_answer(docker_client, test_images, tmp_path):
    config = load_config("/nonexistent", environ={"RUMISTACK_REALM": REALM})
    files = render(config, TlsFacts(hsts=True))
    with running_proxy(docker_client, test_images, tmp_path, files,
                       https=Https(self_signed(["localhost", "127.0.0.1"], now()))) as hsts_proxy:
        for path, headers in (("/health", {}), ("/", {}), ("/", {"Authorization": basic("alice", "x")})):
            answer = send(hsts_proxy.port, path, headers=headers)
            assert answer.headers["Strict-Transport-Security"] == "max-age=63072000", (path, answer.status)


@pytest.mark.parametrize("image, version", [("nginx-bookworm", (1, 22, 1)), ("nginx-trixie", (1, 26, 3))])
def test_the_tls_config_passes_nginx_t_in_nginx_1_22_and_1_26_without_warnings(docker_client, test_images,
                                                                               image, version):
    image = test_images[image]
    engine = engine_volumes(docker_client, image)
    detected = engine.nginx_version()
    assert detected == version
    config = load_config("/nonexistent", environ={"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "rumi.test"})
    files = render(config, TlsFacts(nginx_version=detected))
    pem = {f"{TLS_DIR}/{PEM_FILE}": File(self_signed(["rumi.test"], now()).pem(), mode=0o600)}
    engine.check(files, pem)
    assert _nginx_t_warnings(docker_client, image, files, pem) == ""


def test_the_old_http2_form_warns_in_nginx_1_26(docker_client, test_images):
    """Why the version decides: `listen ... http2` still works in 1.26 but is deprecated."""
    config = load_config("/nonexistent", environ={})
    files = render(config, TlsFacts(nginx_version=None))
    pem = {f"{TLS_DIR}/{PEM_FILE}": File(self_signed(["localhost"], now()).pem(), mode=0o600)}
    assert 'the "listen ... http2" directive is deprecated' in _nginx_t_warnings(
        docker_client, test_images["nginx-trixie"], files, pem)


def _nginx_t_warnings(docker_client, image: str, files: dict[str, str], others: dict[str, File]) -> str:
    """The [warn] lines of `nginx -t` on the rendered files."""
    container = docker_client.containers.create(image, ["nginx", "-t", "-c", f"{CONF_DIR}/{MAIN_FILE}"],
                                                labels=TEST_LABELS, extra_hosts={"rumitalk": "127.0.0.1"},
                                                # nginx -t creates the auth cache inside the tmpfs nginx has
                                                tmpfs=hardened.TMPFS)
    try:
        container.put_archive("/", archive({n: File(t.encode()) for n, t in files.items()}, prefix=CONF_DIR))
        container.put_archive("/", archive({p.lstrip("/"): f for p, f in others.items()}))
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs().decode()
        return "\n".join(line for line in container.logs().decode().splitlines() if "[warn]" in line)
    finally:
        container.remove(force=True)

"""`rumistack up` with HTTPS, end to end: self-signed by default (made
once, kept, trusted by `rumistack check`), and the self-hoster's own
certificate files (served as given; a new pair is in use when `up` returns,
by a reload)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
from certs import make_ca, write_pair
from clirun import PASSWORD, free_port, rumistack
from cryptography import x509
from web import TlsPort, basic, connect, send

from rumistack.spec import LABEL_PROJECT

ALICE = {"Authorization": basic("alice", PASSWORD)}


@pytest.fixture
def https_env(project, monkeypatch):
    """`project` with HTTPS in its default mode (self-signed) on a port of its own, and a user alice."""
    https_port = free_port()
    monkeypatch.delenv("RUMISTACK_TLS")
    monkeypatch.setenv("RUMISTACK_HTTPS_PORT", str(https_port))
    assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    return project.name, project.port, https_port


def _served(port: int, cafile: Path) -> x509.Certificate:
    """The certificate nginx presents on 127.0.0.1:`port`, verified against `cafile`."""
    with connect(TlsPort(port, ssl.create_default_context(cafile=cafile))) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def _containers(client, project: str) -> dict[str, tuple[str, str]]:
    return {c.name: (c.id, c.attrs["State"]["StartedAt"])
            for c in client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})}


def test_up_serves_https_by_default_with_a_self_signed_certificate_made_once(docker_client, https_env, tmp_path):
    project, http_port, https_port = https_env
    result = rumistack("up")
    assert result.exit_code == 0, result.output
    assert f"RumiTalk is up at https://127.0.0.1:{https_port}/" in result.output

    kept = tmp_path / ".rumistack" / "tls" / "self-signed.crt"
    port = TlsPort(https_port, ssl.create_default_context(cafile=kept))
    assert send(port, "/").status == 401
    assert send(port, "/", headers=ALICE).status == 200
    assert send(port, "/api/x").seen["path"] == "/api/x"
    assert _served(https_port, kept) == x509.load_pem_x509_certificate(kept.read_bytes())

    redirect = send(http_port, "/c/new?x=1")
    assert (redirect.status, redirect.headers["Location"]) == (301, f"https://127.0.0.1:{https_port}/c/new?x=1")

    status = rumistack("status")
    assert status.exit_code == 0, status.output
    assert "https: self-signed" in status.output
    assert "certificate: for localhost, 127.0.0.1, issued by O=rumistack self-signed,CN=localhost, expires" in status.output
    assert "self-signed: browsers will warn until you trust .rumistack/tls/self-signed.crt" in status.output
    https = json.loads(rumistack("status", "--json").output)["https"]
    assert https["mode"] == "self-signed" and https["certificate"]["names"] == ["localhost", "127.0.0.1"]
    assert https["certificate"]["self_signed"] is True

    before, kept_bytes = _containers(docker_client, project), kept.read_bytes()
    again = rumistack("up")
    assert again.exit_code == 0, again.output
    assert "nginx is up to date" in again.output
    assert kept.read_bytes() == kept_bytes and _containers(docker_client, project) == before

    check = rumistack("check", "--user", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert check.exit_code == 0, check.output  # trusts the kept certificate by itself
    assert f"checks against https://127.0.0.1:{https_port}/: 0 failed" in check.output


def test_up_serves_the_self_hosters_certificate_and_returns_once_nginx_reloaded_a_new_one(docker_client, https_env,
                                                                                           tmp_path, monkeypatch):
    project, _, https_port = https_env
    ca = make_ca()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.pem())
    first = ca.issue(["localhost", "127.0.0.1"])
    cert_file, key_file = write_pair(tmp_path, first)
    for key, value in {"RUMISTACK_TLS": "files", "RUMISTACK_TLS_CERT_FILE": str(cert_file),
                       "RUMISTACK_TLS_KEY_FILE": str(key_file)}.items():
        monkeypatch.setenv(key, value)
    result = rumistack("up")
    assert result.exit_code == 0, result.output
    assert _served(https_port, ca_file) == first.leaf
    status = rumistack("status").output
    assert f"issued by CN=rumistack test CA, expires {first.not_after:%Y-%m-%d}" in status
    assert "browsers will warn" not in status

    before = _containers(docker_client, project)
    second = ca.issue(["localhost", "127.0.0.1"])
    write_pair(tmp_path, second)
    result = rumistack("up")
    assert result.exit_code == 0, result.output
    assert "reloaded nginx" in result.output
    assert _served(https_port, ca_file) == second.leaf  # `up` waited for nginx to report the new certificate's config
    assert _containers(docker_client, project) == before  # reloaded, not restarted

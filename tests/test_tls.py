"""Certificates: the self-hoster's files checked before use, the self-signed one made once and kept,
and the test for public trust that decides HSTS."""

import re
import stat
from datetime import timedelta

import pytest
from certs import NOW, make_ca, write_pair
from cryptography.hazmat.primitives import serialization

from rumistack.errors import CertificateError
from rumistack.tls import (
    Certificate,
    kept_self_signed,
    load_files,
    placeholder,
    publicly_trusted,
    self_signed,
    self_signed_names,
)


@pytest.fixture(scope="module")
def ca():
    return make_ca()


def test_a_good_chain_and_key_are_accepted(ca, tmp_path):
    cert_file, key_file = write_pair(tmp_path, ca.issue(["chat.example.com"]))
    certificate = load_files(cert_file, key_file, "chat.example.com", NOW)
    assert certificate.names == ("chat.example.com",)
    assert certificate.issuer == "CN=rumistack test CA"


def test_a_key_of_another_pair_is_refused(ca, tmp_path):
    cert_file, _ = write_pair(tmp_path, ca.issue(["chat.example.com"]), "one")
    _, other_key = write_pair(tmp_path, ca.issue(["chat.example.com"]), "two")
    with pytest.raises(CertificateError, match=re.escape(
            f"the key in {other_key} does not belong to the certificate in {cert_file}: they are from different pairs")):
        load_files(cert_file, other_key, "chat.example.com", NOW)


def test_a_chain_in_the_wrong_order_is_refused_saying_so(ca, tmp_path):
    server = ca.issue(["chat.example.com"])
    cert_file, key_file = write_pair(tmp_path, server)
    cert_file.write_bytes(ca.pem() + server.chain_pem())
    with pytest.raises(CertificateError, match="it belongs to certificate 2 of the chain: put the server's own"):
        load_files(cert_file, key_file, "chat.example.com", NOW)


def test_an_expired_certificate_is_refused_with_its_end(ca, tmp_path):
    expired = ca.issue(["chat.example.com"], NOW - timedelta(days=100), NOW - timedelta(days=10))
    cert_file, key_file = write_pair(tmp_path, expired)
    with pytest.raises(CertificateError, match=f"expired on {expired.not_after:%Y-%m-%d %H:%M} UTC"):
        load_files(cert_file, key_file, "chat.example.com", NOW)


def test_a_certificate_not_valid_yet_is_refused(ca, tmp_path):
    cert_file, key_file = write_pair(tmp_path, ca.issue(["chat.example.com"], NOW + timedelta(days=1)))
    with pytest.raises(CertificateError, match="is not valid before"):
        load_files(cert_file, key_file, "chat.example.com", NOW)


def test_a_certificate_for_another_name_is_refused_naming_both(ca, tmp_path):
    cert_file, key_file = write_pair(tmp_path, ca.issue(["www.example.com", "example.com"]))
    with pytest.raises(CertificateError, match=re.escape(
            "is for www.example.com, example.com, not for RUMISTACK_DOMAIN=chat.example.com")):
        load_files(cert_file, key_file, "chat.example.com", NOW)


@pytest.mark.parametrize("domain, covered", [
    ("chat.example.com", True), ("CHAT.example.com", True), ("example.com", False),
    ("a.chat.example.com", False), ("chatexample.com", False),
])
def test_a_wildcard_covers_exactly_one_label(ca, domain, covered):
    assert ca.issue(["*.example.com"]).covers(domain) is covered


def test_a_certificate_for_an_ip_address_covers_that_address(ca):
    certificate = ca.issue(["192.168.1.10"])
    assert certificate.covers("192.168.1.10") and not certificate.covers("192.168.1.11")


def test_a_key_with_a_passphrase_is_refused_saying_how_to_store_it(ca, tmp_path):
    server = ca.issue(["chat.example.com"])
    cert_file, key_file = write_pair(tmp_path, server)
    key_file.write_bytes(server.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(CertificateError, match="protected by a passphrase, which nginx cannot ask for"):
        load_files(cert_file, key_file, "chat.example.com", NOW)


@pytest.mark.parametrize("swap, message", [
    ("cert", "holds no PEM certificate"),
    ("key", "holds no PEM private key"),
])
def test_files_without_what_they_should_hold_are_refused(ca, tmp_path, swap, message):
    cert_file, key_file = write_pair(tmp_path, ca.issue(["chat.example.com"]))
    (cert_file if swap == "cert" else key_file).write_text("hello\n")
    with pytest.raises(CertificateError, match=message):
        load_files(cert_file, key_file, "chat.example.com", NOW)


def test_a_missing_file_is_named_with_its_key(tmp_path):
    with pytest.raises(CertificateError, match=f"RUMISTACK_TLS_CERT_FILE={tmp_path}/nope.crt: cannot read it"):
        load_files(tmp_path / "nope.crt", tmp_path / "nope.key", "chat.example.com", NOW)


def test_the_file_nginx_reads_holds_chain_and_key_and_reads_back(ca):
    server = ca.issue(["chat.example.com"])
    back = Certificate.from_pem(server.pem())
    assert back.chain == server.chain
    assert back.key_pem() == server.key_pem()


def test_the_self_signed_certificate_is_made_once_and_kept(tmp_path):
    first = kept_self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"], NOW)
    again = kept_self_signed(tmp_path / "tls", ["localhost", "127.0.0.1"], NOW + timedelta(days=300))
    assert again.pem() == first.pem()
    assert first.names == ("localhost", "127.0.0.1") and first.self_signed
    assert stat.S_IMODE((tmp_path / "tls" / "self-signed.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700


@pytest.mark.parametrize("names, later", [
    (["chat.lan"], 0),  # another domain
    (["localhost"], 800),  # near its end (825 days)
])
def test_the_self_signed_certificate_is_made_anew_for_another_domain_or_near_its_end(tmp_path, names, later):
    first = kept_self_signed(tmp_path, ["localhost"], NOW)
    again = kept_self_signed(tmp_path, names, NOW + timedelta(days=later))
    assert again.leaf.serial_number != first.leaf.serial_number
    assert again.covers(names[0])


def test_self_signed_names_add_the_bound_address_when_it_is_one():
    assert self_signed_names("localhost", "0.0.0.0") == ("localhost",)
    assert self_signed_names("localhost", "127.0.0.1") == ("localhost", "127.0.0.1")
    assert self_signed_names("192.168.1.10", "192.168.1.10") == ("192.168.1.10",)


def test_public_trust_needs_a_chain_to_a_known_root_for_the_domain(ca):
    server = ca.issue(["chat.example.com"])
    assert publicly_trusted(server, "chat.example.com", NOW, roots=[ca.certificate])
    assert not publicly_trusted(server, "other.example.com", NOW, roots=[ca.certificate])
    assert not publicly_trusted(server, "chat.example.com", NOW, roots=[make_ca().certificate])
    assert not publicly_trusted(server, "chat.example.com", NOW)  # our CA is in no public root program


def test_self_signed_and_placeholder_certificates_are_never_publicly_trusted():
    assert not publicly_trusted(self_signed(["localhost"], NOW), "localhost", NOW)
    stand_in = placeholder("chat.example.com", NOW)
    assert stand_in.placeholder and not publicly_trusted(stand_in, "chat.example.com", NOW)

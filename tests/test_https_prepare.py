"""https.prepare's decisions, without Docker: which certificate nginx serves,
whether `up` writes it, whether it asks the ACME server (and must replace a
good certificate), and HSTS. The volumes are a recording stand-in holding
what a real stack's volumes would."""

from datetime import timedelta

import pytest
from certs import NOW, make_ca
from recording import RecordingVolumes

from rumistack import acme, tls
from rumistack.config import load_config
from rumistack.errors import CertificateError
from rumistack.https import prepare
from rumistack.layout import PEM_FILE, TLS_DIR
from rumistack.spec import ACME_VOLUME, TLS_VOLUME
from rumistack.tls import placeholder, self_signed

DOMAIN = "chat.example.com"
DIRECTORY = "https://acme.example.net/directory"
RENEWAL = f"renewal/{DOMAIN}.conf"


@pytest.fixture(scope="module")
def ca():
    return make_ca("an ACME server's CA")


def _acme_config(**env):
    return load_config("/nonexistent", environ={"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": DOMAIN,
                                                "RUMISTACK_ACME_DIRECTORY": DIRECTORY, **env})


def _renewal(server: str) -> bytes:
    """A renewal file as certbot writes it, trimmed to what matters here."""
    return (f"# renew_before_expiry = 30 days\nversion = 2.1.0\narchive_dir = /etc/letsencrypt/archive/{DOMAIN}\n"
            f"[renewalparams]\naccount = 0123abcd\nserver = {server}\nauthenticator = webroot\n").encode()


def _volumes(certificate=None, renewal=None, version=None) -> RecordingVolumes:
    contents = {}
    if certificate is not None:
        contents[TLS_VOLUME] = {PEM_FILE: certificate if isinstance(certificate, bytes) else certificate.pem()}
    if renewal is not None:
        contents[ACME_VOLUME] = {RENEWAL: renewal}
    return RecordingVolumes(contents=contents, version=version)


def _decide(config, volumes, certificate=None):
    served = prepare(config, certificate, NOW, volumes)
    # deciding reads and never writes: `up` writes only after nginx -t accepts the result
    assert set(volumes.calls) <= {"read", "nginx_version"}
    return served


def test_without_https_nothing_is_served_and_no_volume_is_asked():
    volumes = _volumes()
    served = _decide(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}), volumes)
    assert served.certificate is None and not served.issue and served.volume_files() == {}
    assert volumes.calls == []


@pytest.mark.parametrize("mode, env", [("self-signed", {}), ("files", {"RUMISTACK_TLS_CERT_FILE": "/c.pem",
                                                                       "RUMISTACK_TLS_KEY_FILE": "/k.pem"})])
def test_a_local_certificate_is_served_and_written_only_when_the_volume_holds_another(mode, env, ca):
    config = load_config("/nonexistent", environ={"RUMISTACK_TLS": mode, "RUMISTACK_DOMAIN": DOMAIN, **env})
    local = ca.issue([DOMAIN])

    fresh = _decide(config, _volumes(), local)
    assert fresh.certificate == local and fresh.changed
    assert fresh.volume_files() == {TLS_VOLUME: {PEM_FILE: fresh.check_files()[f"{TLS_DIR}/{PEM_FILE}"]}}
    assert fresh.volume_files()[TLS_VOLUME][PEM_FILE].data == local.pem()

    same = _decide(config, _volumes(local), local)
    assert same.certificate == local and not same.changed and same.volume_files() == {}

    other = _decide(config, _volumes(ca.issue([DOMAIN])), local)
    assert other.certificate == local and other.changed
    assert not (fresh.issue or same.issue or other.issue)  # only acme asks a server


def test_the_nginx_version_of_the_volumes_reaches_the_rendered_facts(ca):
    config = load_config("/nonexistent", environ={"RUMISTACK_DOMAIN": DOMAIN})
    assert _decide(config, _volumes(version=(1, 25, 1)), ca.issue([DOMAIN])).facts.nginx_version == (1, 25, 1)
    assert _decide(config, _volumes(version=None), ca.issue([DOMAIN])).facts.nginx_version is None


def test_hsts_only_for_a_certificate_that_leads_to_a_public_root(ca, monkeypatch):
    config = load_config("/nonexistent", environ={"RUMISTACK_DOMAIN": DOMAIN})
    assert not _decide(config, _volumes(), ca.issue([DOMAIN])).hsts  # our CA is in no root program
    assert not _decide(config, _volumes(), self_signed([DOMAIN], NOW)).hsts
    # with our CA among the roots (as if it were in Mozilla's program), the same decision says yes
    monkeypatch.setattr(tls, "_public_roots", lambda: (ca.certificate,))
    assert _decide(config, _volumes(), ca.issue([DOMAIN])).hsts
    assert not _decide(config, _volumes(), ca.issue(["other.example.com"])).hsts  # not for this domain
    certbots = ca.issue([DOMAIN])
    assert _decide(_acme_config(), _volumes(certbots, _renewal(DIRECTORY)), None).hsts


def test_acme_with_empty_volumes_serves_a_placeholder_and_asks_for_a_certificate():
    served = _decide(_acme_config(), _volumes())
    assert served.certificate.placeholder and served.certificate.covers(DOMAIN)
    assert served.changed and served.issue and not served.replace and not served.hsts
    assert served.volume_files()[TLS_VOLUME][PEM_FILE].data == served.certificate.pem()
    assert served.volume_files()[ACME_VOLUME][acme.HOOK].data == acme.install_hook(DOMAIN)
    assert served.volume_files()[ACME_VOLUME][acme.HOOK].mode == 0o755


def test_acme_keeps_serving_certbots_good_certificate_without_asking_or_writing_it(ca):
    certbots = ca.issue([DOMAIN])
    served = _decide(_acme_config(), _volumes(certbots, _renewal(DIRECTORY)))
    assert served.certificate.pem() == certbots.pem()
    assert not served.changed and not served.issue and not served.replace
    assert TLS_VOLUME not in served.volume_files()  # certbot's deploy hook owns that file
    assert acme.HOOK in served.volume_files()[ACME_VOLUME]  # the hook is kept current though


def test_acme_asks_again_for_a_certificate_near_its_end_and_serves_it_meanwhile(ca):
    due = ca.issue([DOMAIN], not_after=NOW + tls.RENEW_BEFORE - timedelta(days=1))
    served = _decide(_acme_config(), _volumes(due, _renewal(DIRECTORY)))
    assert served.certificate.pem() == due.pem() and not served.changed
    assert served.issue and not served.replace


@pytest.mark.parametrize("kept", ["expired", "placeholder", "other domain", "damaged"])
def test_acme_replaces_what_cannot_be_served_with_a_placeholder_and_asks(ca, kept):
    pem = {
        "expired": lambda: ca.issue([DOMAIN], not_before=NOW - timedelta(days=90),
                                    not_after=NOW - timedelta(minutes=1)).pem(),
        "placeholder": lambda: placeholder(DOMAIN, NOW - timedelta(days=1)).pem(),
        "other domain": lambda: ca.issue(["other.example.com"]).pem(),
        "damaged": lambda: b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    }[kept]()
    served = _decide(_acme_config(), _volumes(pem, _renewal(DIRECTORY)))
    assert served.certificate.placeholder and served.certificate.pem() != pem
    assert served.changed and served.issue
    assert not served.replace  # nothing good is kept, so nothing is forced: certbot asks anyway
    assert served.volume_files()[TLS_VOLUME][PEM_FILE].data == served.certificate.pem()


def test_acme_replaces_a_good_certificate_when_it_came_from_another_acme_server(ca):
    certbots = ca.issue([DOMAIN])
    served = _decide(_acme_config(), _volumes(certbots, _renewal("https://acme-staging.example.net/directory")))
    assert acme.server_of(_renewal("https://acme-staging.example.net/directory")) != DIRECTORY
    # nginx serves the good one until the new server's certificate arrives
    assert served.certificate.pem() == certbots.pem() and not served.changed
    assert served.issue and served.replace
    # certbot's script decides the same from the renewal file, under its lock
    assert 'grep -qxF "server = $server" "$renewal"; then when=--force-renewal' in acme.obtain_command(_acme_config())[2]


def test_acme_without_a_renewal_file_asks_only_when_the_certificate_needs_it(ca):
    served = _decide(_acme_config(), _volumes(ca.issue([DOMAIN])))
    assert not served.issue and not served.replace


def test_acme_copies_the_ca_bundle_for_certbot_and_names_one_it_cannot_read(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(b"a CA bundle\n")
    served = _decide(_acme_config(RUMISTACK_ACME_CA_BUNDLE=str(bundle)), _volumes())
    assert served.volume_files()[ACME_VOLUME][acme.CA_BUNDLE].data == b"a CA bundle\n"
    with pytest.raises(CertificateError, match=f"RUMISTACK_ACME_CA_BUNDLE={tmp_path}/missing.pem: cannot read it"):
        prepare(_acme_config(RUMISTACK_ACME_CA_BUNDLE=str(tmp_path / "missing.pem")), None, NOW, _volumes())


def test_a_changed_acme_server_forces_no_renewal_when_no_good_certificate_is_kept(ca):
    # `replace` makes certbot renew a certificate it would keep; with nothing good kept it asks anyway
    served = _decide(_acme_config(), _volumes(placeholder(DOMAIN, NOW), _renewal("https://old.example.net/directory")))
    assert served.issue and not served.replace and served.changed

import re
from pathlib import Path

import pytest
from dotenv import dotenv_values

from rumistack.config import KEYS, load_config
from rumistack.errors import ConfigError

ROOT = Path(__file__).parent.parent


def test_every_key_has_a_working_default():
    config = load_config(env_file="/nonexistent/.env", environ={})
    assert config.project == "rumistack"
    assert config.domain == "localhost"
    assert config.url == "https://localhost:8443/"  # https by default, with a self-signed certificate
    assert config.tls == "self-signed"


def test_env_example_documents_every_key_with_its_default():
    documented = dotenv_values(ROOT / ".env.example")
    assert documented == {key.name: key.default for key in KEYS}


def test_environment_overrides_the_env_file(tmp_path):
    env = tmp_path / ".env"
    env.write_text("RUMISTACK_DOMAIN=chat.example.com\nRUMISTACK_HTTP_PORT=9000\n")
    config = load_config(env, environ={"RUMISTACK_HTTP_PORT": "9100"})
    assert config.domain == "chat.example.com"
    assert config.http_port == 9100


def test_bind_address_of_loopback_shows_in_the_url():
    config = load_config("/nonexistent", environ={"RUMISTACK_BIND_ADDRESS": "127.0.0.1", "RUMISTACK_HTTP_PORT": "80",
                                                  "RUMISTACK_TLS": "off"})
    assert config.url == "http://127.0.0.1/"


def test_url_uses_the_https_port_and_leaves_out_443():
    assert load_config("/nonexistent", environ={"RUMISTACK_DOMAIN": "chat.example.com",
                                                "RUMISTACK_HTTPS_PORT": "443"}).url == "https://chat.example.com/"
    assert load_config("/nonexistent", environ={"RUMISTACK_HTTPS_PORT": "9443"}).url == "https://localhost:9443/"


@pytest.mark.parametrize("environ, message", [
    ({"RUMISTACK_TLS": "files"}, "RUMISTACK_TLS=files needs RUMISTACK_TLS_CERT_FILE"),
    ({"RUMISTACK_TLS": "files", "RUMISTACK_TLS_CERT_FILE": "/c.pem"}, "RUMISTACK_TLS_KEY_FILE"),
    ({"RUMISTACK_TLS": "acme"}, "RUMISTACK_TLS=acme needs a public domain name in RUMISTACK_DOMAIN (not 'localhost')"),
    ({"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "192.168.1.10"}, "needs a public domain name"),
    ({"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "nas"}, "needs a public domain name"),
    ({"RUMISTACK_HTTP_PORT": "8443"}, "RUMISTACK_HTTP_PORT and RUMISTACK_HTTPS_PORT are both 8443"),
])
def test_tls_keys_that_only_work_together_are_refused_with_what_to_set(environ, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("/nonexistent", environ=environ)


def test_plain_http_may_share_no_port_with_an_unused_https_port():
    config = load_config("/nonexistent", environ={"RUMISTACK_TLS": "off", "RUMISTACK_HTTP_PORT": "8443"})
    assert config.url == "http://localhost:8443/"


def test_loopback_only_is_true_for_any_loopback_address():
    assert load_config("/nonexistent", environ={"RUMISTACK_BIND_ADDRESS": "127.0.0.1"}).loopback_only
    assert load_config("/nonexistent", environ={"RUMISTACK_BIND_ADDRESS": "::1"}).loopback_only
    assert not load_config("/nonexistent", environ={}).loopback_only


@pytest.mark.parametrize(
    "key, value",
    [
        ("RUMISTACK_DOMAIN", "example.com; return 200"),
        ("RUMISTACK_DOMAIN", "a b"),
        ("RUMISTACK_DOMAIN", "-bad.example"),
        ("RUMISTACK_DOMAIN", "x" * 64 + ".com"),
        ("RUMISTACK_REALM", 'Rumi"Talk'),
        ("RUMISTACK_REALM", "Rumi$Talk"),
        ("RUMISTACK_REALM", "a;b"),
        ("RUMISTACK_REALM", "a{b}"),
        ("RUMISTACK_REALM", "line\nbreak"),
        ("RUMISTACK_HTTP_PORT", "0"),
        ("RUMISTACK_HTTP_PORT", "65536"),
        ("RUMISTACK_HTTP_PORT", "80a"),
        ("RUMISTACK_BIND_ADDRESS", "localhost"),
        ("RUMISTACK_PROJECT", "Upper"),
        ("RUMISTACK_PROJECT", "a/b"),
        ("RUMISTACK_NGINX_IMAGE", "nginx:latest; rm"),
        ("RUMITALK_IMAGE", "UPPER/case"),
        ("RUMISTACK_HEALTH_TIMEOUT", "-1"),
        ("RUMISTACK_AUTH_CACHE_SECONDS", "0"),
        ("RUMISTACK_AUTH_CACHE_SECONDS", "5m"),
        ("RUMISTACK_TLS", "on"),
        ("RUMISTACK_TLS", "letsencrypt"),
        ("RUMISTACK_HTTPS_PORT", "0"),
        ("RUMISTACK_ACME_DIRECTORY", "http://acme.example/directory"),
        ("RUMISTACK_ACME_DIRECTORY", "https://acme.example/dir ectory"),
        ("RUMISTACK_ACME_EMAIL", "not-an-address"),
        ("RUMISTACK_CERTBOT_IMAGE", "certbot/certbot:v5.7.0; rm -rf /"),
    ],
)
def test_invalid_value_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config("/nonexistent", environ={key: value})


def test_a_path_exempted_twice_is_refused_naming_the_key_like_every_other_error():
    with pytest.raises(ConfigError, match=r"^RUMISTACK_EXEMPT_PATHS='/0,/0' is not valid: /0 is exempt already"):
        load_config("/nonexistent", environ={"RUMISTACK_EXEMPT_PATHS": "/0,/0"})


def test_a_tls_mode_in_another_case_is_refused_since_the_compose_bundle_reads_it_as_written():
    with pytest.raises(ConfigError, match=re.escape("use one of acme, files, self-signed, off, in lower case")):
        load_config("/nonexistent", environ={"RUMISTACK_TLS": "Off"})

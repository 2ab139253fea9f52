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
    assert config.url == "http://localhost:8080/"


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
    config = load_config("/nonexistent", environ={"RUMISTACK_BIND_ADDRESS": "127.0.0.1", "RUMISTACK_HTTP_PORT": "80"})
    assert config.url == "http://127.0.0.1/"


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
    ],
)
def test_invalid_value_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config("/nonexistent", environ={key: value})

"""RumiTalk's own settings: the settings file and the YAML, checked before
use, given to RumiTalk only, and what they turn on named without a value."""

import pytest
from dotenv import dotenv_values
from recording import RecordingVolumes

from rumistack import https
from rumistack.appsettings import DERIVED, AppSettings, load_app_settings
from rumistack.compose import env_text, render_bundle
from rumistack.config import load_config
from rumistack.errors import ConfigError, UserError
from rumistack.layout import RUMITALK_CONFIG_DIR, RUMITALK_UID
from rumistack.publish import publish
from rumistack.secretstore import GENERATORS, load_secrets
from rumistack.spec import RUMITALK_CONFIG_VOLUME, services
from rumistack.tls import now
from rumistack.users import UserFile

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def here(tmp_path, monkeypatch):
    """An empty working directory: the settings file and the YAML at their default names."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _config(**env):
    return load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": ".rumistack", **env})


def _rumitalk(config, app, secrets=None, swarm=False):
    stack = services(config, secrets or {name: f"secret-{name}" for name in GENERATORS}, app, swarm=swarm)
    return next(s for s in stack if s.name == "rumitalk")


def test_missing_files_mean_rumitalks_defaults(here):
    app = load_app_settings(_config())
    assert app == AppSettings()
    assert app.providers() == ()


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_a_variable_the_stack_sets_is_refused_with_the_key_that_controls_it(here, name):
    (here / "rumitalk.env").write_text(f"OPENAI_API_KEY={KEY}\n{name}=x\n")
    with pytest.raises(ConfigError) as refused:
        load_app_settings(_config())
    assert f"{name} is set by rumistack, from {DERIVED[name]}" in str(refused.value)
    assert KEY not in str(refused.value)


def test_a_rumistack_key_in_the_settings_file_belongs_in_env(here):
    (here / "rumitalk.env").write_text("RUMISTACK_DOMAIN=chat.example.com\n")
    with pytest.raises(ConfigError, match="RUMISTACK_DOMAIN is a rumistack setting: move it to .env"):
        load_app_settings(_config())


@pytest.mark.parametrize("search, mongo_uri, yaml, on_swarm", [(False, "", False, False),
                                                            (True, "mongodb://db:27017/x", True, True)])
def test_every_variable_the_stack_derives_is_one_the_settings_file_may_not_set(here, search, mongo_uri, yaml, on_swarm):
    if yaml:
        (here / "rumitalk.yaml").write_text("version: 1.2.1\n")
    config = _config(RUMISTACK_SEARCH=str(search).lower(), RUMISTACK_MONGO_URI=mongo_uri)
    app = load_app_settings(config)
    derived = {name for name, _ in _rumitalk(config, app, swarm=on_swarm).environment} - set(GENERATORS)
    assert derived and derived <= set(DERIVED)
    assert ("REDIS_URI" in derived) == on_swarm
    assert ("CONFIG_PATH" in derived) == yaml and ("MEILI_HOST" in derived) == search


def test_settings_reach_rumitalk_as_written_and_no_other_service(here):
    (here / "rumitalk.env").write_text(f"OPENAI_API_KEY={KEY}\nALLOW_REGISTRATION=true\nODD=a$b ${{HOME}} 'q'\n")
    config = _config(RUMISTACK_SEARCH="true")
    app = load_app_settings(config)
    stack = services(config, {name: "s" for name in GENERATORS}, app)
    environment = dict(next(s for s in stack if s.name == "rumitalk").environment)
    assert environment["OPENAI_API_KEY"] == KEY and environment["ALLOW_REGISTRATION"] == "true"
    assert environment["ODD"] == "a$b ${HOME} 'q'"  # no expansion: RumiTalk's dotenv takes it as written
    for other in (s for s in stack if s.name != "rumitalk"):
        assert KEY not in repr(other), other.name


def test_the_compose_env_file_keeps_a_dollar_and_refuses_what_it_cannot_quote(here, tmp_path):
    (here / "rumitalk.env").write_text(f"OPENAI_API_KEY={KEY}\nPRICE=a$b${{X}}\n")
    config = _config()
    rumitalk = _rumitalk(config, load_app_settings(config))
    written = tmp_path / "rumitalk.env.out"
    written.write_bytes(env_text(rumitalk))
    assert dotenv_values(written, interpolate=False)["PRICE"] == "a$b${X}"
    (here / "rumitalk.env").write_text("QUOTED=it's\n")
    with pytest.raises(ConfigError, match="QUOTED cannot be written for docker compose"):
        env_text(_rumitalk(config, load_app_settings(config)))


def test_a_yaml_syntax_error_names_the_line_and_column_but_never_the_line(here):
    (here / "rumitalk.yaml").write_text(f"endpoints:\n  custom:\n    - name: a\n      apiKey: \"{KEY}\n")
    with pytest.raises(ConfigError) as refused:
        load_app_settings(_config())
    message = str(refused.value)
    assert "rumitalk.yaml, line " in message and ", column " in message and "nothing was changed" in message
    assert KEY not in message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just text\n", "str")])
def test_a_yaml_that_is_not_a_mapping_is_refused(here, text, kind):
    (here / "rumitalk.yaml").write_text(text)
    with pytest.raises(ConfigError, match=f"must be a mapping .* not a {kind}"):
        load_app_settings(_config())


def test_the_providers_are_named_from_keys_and_custom_endpoints_never_with_a_value(here):
    (here / "rumitalk.env").write_text(f"OPENAI_API_KEY={KEY}\nANTHROPIC_API_KEY=user_provided\nGOOGLE_KEY=\n")
    (here / "rumitalk.yaml").write_text(
        "endpoints:\n  custom:\n    - name: ollama\n      apiKey: ollama\n      baseURL: http://ollama:11434/v1\n"
        "      models: {default: [llama3]}\n    - name: openrouter\n      apiKey: user_provided\n"
        "      baseURL: https://openrouter.ai/api/v1\n      models: {default: [x]}\n")
    described = [p.describe() for p in load_app_settings(_config()).providers()]
    assert described == ["openAI", "anthropic (each user brings a key)", "custom: ollama",
                         "custom: openrouter (each user brings a key)"]
    assert not any(KEY in d for d in described)


def test_endpoints_filters_the_providers_as_in_rumitalk(here):
    (here / "rumitalk.env").write_text(f"OPENAI_API_KEY={KEY}\nANTHROPIC_API_KEY={KEY}\nENDPOINTS=anthropic,agents\n")
    assert [p.name for p in load_app_settings(_config()).providers()] == ["anthropic"]


def test_a_changed_yaml_changes_rumitalks_definition_only(here):
    (here / "rumitalk.yaml").write_text("version: 1.2.1\n")
    config = _config()
    first = services(config, {name: "s" for name in GENERATORS}, load_app_settings(config))
    (here / "rumitalk.yaml").write_text("version: 1.2.1\ninterface: {privacyPolicy: {externalUrl: x}}\n")
    second = services(config, {name: "s" for name in GENERATORS}, load_app_settings(config))
    changed = {a.name for a, b in zip(first, second) if a.digest("image") != b.digest("image")}
    assert changed == {"rumitalk"}
    path = dict(next(s for s in second if s.name == "rumitalk").environment)["CONFIG_PATH"]
    assert path.startswith(f"{RUMITALK_CONFIG_DIR}/librechat-") and path.endswith(".yaml")


def test_publish_writes_the_yaml_under_its_name_readable_by_rumitalk_only(here):
    (here / "rumitalk.yaml").write_text("version: 1.2.1\n")
    (here / ".rumistack").mkdir()
    users = UserFile(here / ".rumistack" / "htpasswd")
    users.add("alice", "correct horse battery")
    config = _config()
    app = load_app_settings(config)
    volumes = RecordingVolumes()
    publish(config, volumes, https.local(config, now()), lambda m: None, users, app=app)
    written = volumes.written[RUMITALK_CONFIG_VOLUME][app.config_name]
    assert (written.data, written.mode, written.uid) == (b"version: 1.2.1\n", 0o600, RUMITALK_UID)


def test_the_bundle_gets_the_settings_in_rumitalks_env_file_only(here):
    (here / "rumitalk.env").write_text(f"OPENAI_API_KEY={KEY}\n")
    (here / ".rumistack").mkdir()
    users = UserFile(here / ".rumistack" / "htpasswd")
    users.add("alice", "correct horse battery")
    config = _config()
    render_bundle(config, users, RecordingVolumes(), load_app_settings(config))
    env_files = {p.name: p.read_text() for p in (here / ".rumistack" / "compose").iterdir()}
    assert KEY in env_files.pop("rumitalk.env")
    assert env_files and not any(KEY in text for text in env_files.values())


def test_secrets_from_the_settings_file_are_adopted_and_recorded(tmp_path):
    offered = {"JWT_SECRET": "from-the-old-install", "CREDS_KEY": "ab" * 32}
    secrets = load_secrets(tmp_path, offered)
    assert secrets["JWT_SECRET"] == "from-the-old-install" and secrets["CREDS_KEY"] == "ab" * 32
    assert load_secrets(tmp_path) == secrets  # recorded: a later run without the file keeps them
    assert load_secrets(tmp_path, offered) == secrets  # the same values again: nothing to choose


def test_a_secret_that_differs_from_the_recorded_one_is_refused_with_what_it_breaks(tmp_path):
    recorded = load_secrets(tmp_path)
    with pytest.raises(UserError) as refused:
        load_secrets(tmp_path, {"CREDS_KEY": "cd" * 32})
    message = str(refused.value)
    assert "CREDS_KEY in RumiTalk's settings file differs" in message
    assert "unreadable" in message and "remove CREDS_KEY from the settings file" in message
    assert "cd" * 32 not in message and recorded["CREDS_KEY"] not in message
    assert load_secrets(tmp_path) == recorded


def test_an_unknown_rumistack_key_in_env_is_refused_with_the_closest_known_one(tmp_path):
    env = tmp_path / ".env"
    env.write_text("RUMISTACK_DOMIAN=chat.example.com\n")
    with pytest.raises(ConfigError, match="RUMISTACK_DOMIAN is not a rumistack setting: did you mean RUMISTACK_DOMAIN?"):
        load_config(env, environ={})


@pytest.mark.parametrize("public_url, tls, drops", [
    ("", "off", False),  # http://localhost: a secure context
    ("http://chat.example.com", "off", True),
    ("https://chat.example.com", "off", False),  # an outer proxy terminates TLS
    ("", "self-signed", False),
])
def test_plain_http_to_a_name_that_is_not_loopback_drops_rumitalks_secure_cookies(public_url, tls, drops):
    config = _config(RUMISTACK_PUBLIC_URL=public_url, RUMISTACK_TLS=tls)
    assert config.drops_secure_cookies is drops


def test_the_public_url_is_rumitalks_domain(here):
    config = _config(RUMISTACK_PUBLIC_URL="https://chat.example.com/")
    environment = dict(_rumitalk(config, AppSettings()).environment)
    assert environment["DOMAIN_CLIENT"] == environment["DOMAIN_SERVER"] == "https://chat.example.com"


@pytest.mark.parametrize("value", ["10.0.0.0/33", "not-an-address", "10.0.0.1;"])
def test_trusted_proxies_must_be_addresses_or_networks(value):
    with pytest.raises(ConfigError, match="RUMISTACK_TRUSTED_PROXIES"):
        _config(RUMISTACK_TRUSTED_PROXIES=value)


def test_an_adopted_secret_of_any_printable_characters_reads_back_unchanged(tmp_path):
    odd = "a b#c$d${E}\"f"
    assert load_secrets(tmp_path, {"JWT_SECRET": odd})["JWT_SECRET"] == odd
    assert load_secrets(tmp_path)["JWT_SECRET"] == odd

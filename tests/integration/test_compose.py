"""The compose bundle against real containers: `docker compose config`, the
tools service's render, and compose running what `rumistack up` runs.
(The auth matrix runs against the bundle too: test_auth_matrix.py.)"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import yaml
from bundle import ROOT, Bundle, files, outside_environment, readme_command, snapshot
from passlib.apache import HtpasswdFile
from web import basic, send

from rumistack.config import KEYS, load_config
from rumistack.render import AUTH_DIR, CONF_DIR, render
from rumistack.spec import LABEL_PROJECT, NGINX_GID

PASSWORD = "correct horse battery"
DEFAULTS = {key.name: key.default for key in KEYS}


def _config(directory, env_file: str | None) -> subprocess.CompletedProcess:
    """The README's `config` command in a directory with the compose file and maybe a .env."""
    (directory / "compose").mkdir()
    shutil.copy(ROOT / "compose" / "docker-compose.yml", directory / "compose")
    if env_file is not None:
        (directory / ".env").write_text(env_file)
    return subprocess.run(["bash", "-c", readme_command(" config")], cwd=directory, env=outside_environment(),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env_file, expected", [
    (None, DEFAULTS),
    ("RUMISTACK_PROJECT=from-env-file\nRUMISTACK_HTTP_PORT=18081\nRUMISTACK_DOMAIN=chat.example.com\n"
     "RUMITALK_IMAGE=registry.example.com/rumitalk:v9\n",
     DEFAULTS | {"RUMISTACK_PROJECT": "from-env-file", "RUMISTACK_HTTP_PORT": "18081",
                 "RUMISTACK_DOMAIN": "chat.example.com", "RUMITALK_IMAGE": "registry.example.com/rumitalk:v9"}),
], ids=["without .env", "with .env"])
def test_compose_config_is_valid_without_a_warning_and_reads_the_env_file(compose_plugin, tmp_path, env_file, expected):
    result = _config(tmp_path, env_file)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    bundle = yaml.safe_load(result.stdout)
    project = expected["RUMISTACK_PROJECT"]
    assert bundle["name"] == project
    assert bundle["services"]["rumitalk"]["image"] == expected["RUMITALK_IMAGE"]
    assert bundle["services"]["nginx"]["ports"][0]["published"] == expected["RUMISTACK_HTTP_PORT"]
    assert {v["name"] for v in bundle["volumes"].values()} == {f"{project}_nginx-config", f"{project}_nginx-auth", f"{project}_state"}
    assert bundle["networks"]["default"]["name"] == f"{project}_default"
    tools = bundle["services"]["rumistack"]["environment"]
    assert tools["RUMISTACK_DOMAIN"] == expected["RUMISTACK_DOMAIN"]
    assert tools["RUMISTACK_REALM"] == expected["RUMISTACK_REALM"]


def test_tools_service_writes_the_config_rumistack_renders_and_a_user_file_for_nginx(compose_bundle, docker_client):
    (nginx,) = docker_client.containers.list(filters={"label": [f"{LABEL_PROJECT}={compose_bundle.project}", "rumistack.service=nginx"]})
    config_files = files(nginx, CONF_DIR)
    expected = render(load_config("/nonexistent", environ=compose_bundle.env))
    assert {name.split("/", 1)[1]: data.decode() for name, (data, *_) in config_files.items()} == expected

    (data, mode, uid, gid), = files(nginx, f"{AUTH_DIR}/htpasswd").values()
    assert (mode, uid, gid) == (0o640, 0, NGINX_GID)
    users = HtpasswdFile.from_string(data)
    assert users.users() == ["alice"]
    assert users.check_password("alice", PASSWORD)


@pytest.fixture
def bundle(docker_client, test_images, compose_plugin, tmp_path):
    """A copy of the checkout for a project of its own, with a user `alice`; removed afterwards."""
    bundle = Bundle.create(tmp_path, test_images)
    try:
        bundle.sh("rumistack adduser alice --password-stdin", input=PASSWORD + "\n")
        yield bundle
    finally:
        bundle.remove(docker_client)


def test_compose_runs_what_rumistack_up_runs_with_the_same_config_and_users(bundle, docker_client):
    bundle.sh("rumistack up")
    by_rumistack = snapshot(docker_client, bundle.project)
    # compose takes the network and volumes `up` made as its own (creates no other) ...
    created = bundle.compose("create")
    assert "warn" not in created.stderr.lower() and "Network" not in created.stderr
    # ... and `rumistack down` removes compose's containers with its own
    bundle.sh("rumistack down")
    assert bundle.containers(docker_client) == []

    started = bundle.sh(readme_command("rumistack render &&"))
    assert "warn" not in started.stderr.lower()
    by_compose = snapshot(docker_client, bundle.project)

    assert set(by_compose) == {"rumitalk", "nginx", "nginx files"}
    assert by_compose == by_rumistack
    status = bundle.sh("rumistack status").stdout
    assert status.count("healthy") == 2 and f"{bundle.project}-nginx-1" in status


def test_reload_applies_a_changed_env_and_down_keeps_only_the_volumes(bundle, docker_client):
    bundle.sh(readme_command("rumistack render &&"))
    assert send(bundle.port, "/").headers["WWW-Authenticate"] == 'Basic realm="RumiTalk"'

    bundle.env["RUMISTACK_REALM"] = "Family chat"
    bundle.sh("rumistack render")
    bundle.sh(readme_command("kill -s HUP nginx"))
    # nginx reloads in the background: new workers take over within moments
    deadline = time.monotonic() + 10
    while send(bundle.port, "/").headers["WWW-Authenticate"] != 'Basic realm="Family chat"':
        assert time.monotonic() < deadline, "nginx did not reload its configuration"
        time.sleep(0.2)
    assert send(bundle.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200

    bundle.sh(readme_command(" down"))
    assert bundle.containers(docker_client) == []
    assert docker_client.networks.list(names=[f"{bundle.project}_default"]) == []
    volumes = docker_client.volumes.list(filters={"label": f"{LABEL_PROJECT}={bundle.project}"})
    assert sorted(v.name for v in volumes) == [f"{bundle.project}_nginx-auth", f"{bundle.project}_nginx-config"]

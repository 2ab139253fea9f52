"""The compose bundle against real containers: `docker compose config`, what
the tools service writes, and compose running what `rumistack up` runs.
(The auth tests run against the bundle too: `proxy` in conftest.py.)"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from bundle import ROOT, Bundle, files, outside_environment, docs_command, snapshot
from certs import make_ca, write_pair
from clirun import free_port
from cryptography import x509
from dotenv import dotenv_values
from passlib.apache import HtpasswdFile
from web import TlsPort, basic, connect, send

from rumistack.appsettings import load_app_settings
from rumistack.compose import VARIANTS
from rumistack.config import KEYS, load_config
from rumistack.https import Served
from rumistack.layout import AUTH_DIR, CONF_DIR, NGINX_GID, PEM_FILE, TLS_DIR, USER_FILE
from rumistack.publish import WRITTEN_VOLUMES
from rumistack.render import render
from rumistack.secretstore import load_secrets
from rumistack.spec import LABEL_PROJECT, services, volumes
from rumistack.tls import Certificate
from rumistack.volumes import user_file_name

PASSWORD = "correct horse battery"
DEFAULTS = {key.name: key.default for key in KEYS}
SERVICES = ("mongodb", "rumitalk", "verifier", "nginx")


def _bundle_files(directory: Path) -> None:
    """The compose file, and the verifier's build context it names (compose checks that it is there)."""
    (directory / "compose").mkdir()
    shutil.copy(ROOT / "compose" / "docker-compose.yml", directory / "compose")
    shutil.copytree(ROOT / "orchestrator", directory / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))


def _compose(directory: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=directory, env=outside_environment(),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env_file, expected", [
    (None, DEFAULTS),
    ("RUMISTACK_PROJECT=from-env-file\nRUMISTACK_HTTP_PORT=18081\nRUMISTACK_HTTPS_PORT=18443\n"
     "RUMITALK_IMAGE=registry.example.com/rumitalk:v9\nRUMISTACK_STATE_DIR=elsewhere\n",
     DEFAULTS | {"RUMISTACK_PROJECT": "from-env-file", "RUMISTACK_HTTP_PORT": "18081", "RUMISTACK_HTTPS_PORT": "18443",
                 "RUMITALK_IMAGE": "registry.example.com/rumitalk:v9", "RUMISTACK_STATE_DIR": "elsewhere"}),
], ids=["without .env", "with .env"])
def test_compose_config_is_valid_without_a_warning_and_reads_the_env_file(compose_plugin, tmp_path, env_file, expected):
    _bundle_files(tmp_path)
    if env_file is not None:
        (tmp_path / ".env").write_text(env_file)
    environment = tmp_path / expected["RUMISTACK_STATE_DIR"] / "compose"
    environment.mkdir(parents=True)
    for service in SERVICES:  # as `render` leaves them
        (environment / f"{service}.env").write_text(f"FROM_ENV_FILE='{service}'\n")

    checked = _compose(tmp_path, docs_command(" config --quiet"))
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")

    bundle = json.loads(_compose(tmp_path, docs_command(" config --quiet").replace("--quiet", "--format json")).stdout)
    project = expected["RUMISTACK_PROJECT"]
    assert bundle["name"] == project
    assert bundle["services"]["rumitalk"]["image"] == expected["RUMITALK_IMAGE"]
    assert bundle["services"]["rumitalk"]["environment"] == {"FROM_ENV_FILE": "rumitalk"}
    # the HTTPS port from the template of the TLS mode (compose puts it first)
    assert sorted((p["target"], p["published"]) for p in bundle["services"]["nginx"]["ports"]) == [
        (80, expected["RUMISTACK_HTTP_PORT"]), (443, expected["RUMISTACK_HTTPS_PORT"])]
    assert {v["name"] for v in bundle["volumes"].values()} == {f"{project}_{v}" for v in {*volumes(services(
        load_config("/nonexistent", environ={}), load_secrets(tmp_path / "secrets"))), *WRITTEN_VOLUMES}}
    assert bundle["networks"]["default"]["name"] == f"{project}_default"
    tools = bundle["services"]["rumistack"]
    assert tools["environment"]["RUMISTACK_REALM"] == expected["RUMISTACK_REALM"]
    binds = {v["target"]: v["source"] for v in tools["volumes"] if v["type"] == "bind"}
    assert binds == {"/state": str(tmp_path / expected["RUMISTACK_STATE_DIR"]), "/project": str(tmp_path)}


@pytest.mark.parametrize("env_file, running", [
    ("COMPOSE_PROFILES=search\nRUMISTACK_SEARCH=true\n", {"mongodb", "meilisearch", "rumitalk", "verifier", "nginx"}),
    ("RUMISTACK_MONGO_URI=mongodb://db.example.com:27017/chat\n", {"rumitalk", "verifier", "nginx"}),
    ("COMPOSE_PROFILES=acme\nRUMISTACK_TLS=acme\nRUMISTACK_DOMAIN=chat.example.com\n",
     {"mongodb", "rumitalk", "verifier", "nginx", "certbot"}),
    ("RUMISTACK_TLS=off\n", {"mongodb", "rumitalk", "verifier", "nginx"}),
], ids=["search", "external mongodb", "acme", "tls off"])
def test_each_mode_is_chosen_by_env_alone_and_valid_without_a_warning(compose_plugin, tmp_path, env_file, running):
    _bundle_files(tmp_path)
    (tmp_path / ".env").write_text(env_file)
    environment = tmp_path / ".rumistack" / "compose"
    environment.mkdir(parents=True)
    for service in running:  # as `render` leaves them: none for a service the mode does not run
        (environment / f"{service}.env").write_text(f"FROM_ENV_FILE='{service}'\n")
    checked = _compose(tmp_path, docs_command(" config --quiet"))
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    # what `up` starts: the profiles of COMPOSE_PROFILES (a --profile on the command line replaces them)
    listed = _compose(tmp_path, docs_command(" config --quiet").replace(" --profile tools", "").replace("--quiet", "--services"))
    # and the templates of nginx's TLS modes, which run no container (scale 0)
    assert set(listed.stdout.split()) == running | {f"nginx-tls-{mode}" for mode in VARIANTS}


def test_tools_service_writes_the_config_the_certificate_the_users_and_the_environment_up_would(compose_bundle,
                                                                                                  docker_client):
    (nginx,) = docker_client.containers.list(filters={"label": [f"{LABEL_PROJECT}={compose_bundle.project}", "rumistack.service=nginx"]})
    config = load_config(compose_bundle.root / ".env", environ=compose_bundle.env)
    (pem, mode, uid, _), = files(nginx, f"{TLS_DIR}/{PEM_FILE}").values()
    assert (mode, uid) == (0o600, 0)
    certificate = Certificate.from_pem(pem)
    assert certificate.chain_pem() == compose_bundle.ca_file.read_bytes()  # the one kept in the state directory
    # the tools container cannot ask the nginx image its version: http/2 in the form every version reads
    assert {name.split("/", 1)[1]: data.decode() for name, (data, *_) in files(nginx, CONF_DIR).items()} == render(
        config, Served(certificate).facts)

    auth = {name.split("/", 1)[1]: value for name, value in files(nginx, AUTH_DIR).items()}
    link = auth[USER_FILE][0].decode().removeprefix("-> ")  # the layout publish_user_file makes
    data, mode, uid, gid = auth[link]
    assert link == user_file_name(data)
    assert (mode, uid, gid) == (0o640, 0, NGINX_GID)
    users = HtpasswdFile.from_string(data)
    assert users.users() == ["alice"] and users.check_password("alice", PASSWORD)

    state = compose_bundle.state_dir
    # RumiTalk's settings, as the tools container read them in the project directory
    in_project = dataclasses.replace(config, rumitalk_env_file=compose_bundle.root / config.rumitalk_env_file,
                                     rumitalk_config_file=compose_bundle.root / config.rumitalk_config_file)
    for service in services(config, load_secrets(state), load_app_settings(in_project)):
        written = state / "compose" / f"{service.name}.env"
        assert dotenv_values(written) == dict(service.environment)
        assert written.stat().st_mode & 0o777 == 0o600


def test_tools_service_leaves_the_state_directory_to_its_owner(compose_bundle):
    state = compose_bundle.state_dir
    os.chown(state, 4321, 4321)
    try:
        compose_bundle.compose("run", "--rm", "rumistack", "users")
        owners = {(p.stat().st_uid, p.stat().st_gid) for p in [state, *state.rglob("*")]}
        assert owners == {(4321, 4321)}
    finally:
        shutil.chown(state, 0, 0)
        for path in state.rglob("*"):
            shutil.chown(path, 0, 0)


@pytest.fixture
def bundle(docker_client, image_env, compose_plugin, tmp_path):
    """A copy of the checkout for a project of its own, with a user `alice`; removed afterwards."""
    bundle = Bundle.create(tmp_path, image_env)
    try:
        bundle.sh("rumistack adduser alice --password-stdin", input=PASSWORD + "\n")
        yield bundle
    finally:
        bundle.remove(docker_client)


def test_compose_runs_what_rumistack_up_runs_with_the_same_config_users_and_environment(bundle, docker_client):
    bundle.sh("rumistack up")
    by_rumistack = snapshot(docker_client, bundle.project)
    bundle.sh("rumistack render")
    # compose takes the network and volumes `up` made as its own (creates no other) ...
    created = bundle.compose("create")
    assert "warn" not in created.stderr.lower() and "Network" not in created.stderr
    # ... and `rumistack down` removes compose's containers with its own
    bundle.sh("rumistack down")
    assert bundle.containers(docker_client) == []

    started = bundle.sh(docs_command("rumistack render &&"))
    assert "warn" not in started.stderr.lower()
    by_compose = snapshot(docker_client, bundle.project)

    assert set(by_compose) == {*SERVICES, "nginx files"}
    assert by_compose == by_rumistack
    status = bundle.sh("rumistack status").stdout
    assert status.count("healthy") == 4 and f"{bundle.project}-nginx-1" in status


def test_tools_service_serves_your_certificate_files_kept_in_the_state_directory(bundle, docker_client):
    """RUMISTACK_TLS=files in the bundle without Python: the pair named as the tools container sees it."""
    ca = make_ca()
    mine = ca.issue(["localhost", "127.0.0.1"])
    write_pair(bundle.state_dir, mine, "chat")
    bundle.env.update({"RUMISTACK_TLS": "files", "RUMISTACK_TLS_CERT_FILE": "/state/chat.crt",
                       "RUMISTACK_TLS_KEY_FILE": "/state/chat.key"})
    bundle.compose("run", "--rm", "rumistack", "render")
    bundle.compose("up", "-d", "--wait")
    (bundle.root / "ca.pem").write_bytes(ca.pem())
    trusting = TlsPort(bundle.https_port, ssl.create_default_context(cafile=bundle.root / "ca.pem"))
    with connect(trusting) as tls:
        assert x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)) == mine.leaf
    assert send(trusting, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200


def _rumitalk_env(client, bundle: Bundle) -> list[str]:
    (rumitalk,) = client.containers.list(filters={"label": [f"{LABEL_PROJECT}={bundle.project}", "rumistack.service=rumitalk"]})
    return rumitalk.attrs["Config"]["Env"]


def test_a_changed_env_applies_after_render_and_down_keeps_the_volumes(bundle, docker_client):
    bundle.sh(docs_command("rumistack render &&"))
    assert send(bundle.port, "/").headers["WWW-Authenticate"] == 'Basic realm="RumiTalk"'

    # only nginx's config changes: the reload applies it
    bundle.env["RUMISTACK_REALM"] = "Family chat"
    bundle.sh("rumistack render")
    bundle.sh(docs_command("kill -s HUP nginx"))
    deadline = time.monotonic() + 10  # nginx reloads in the background: new workers take over within moments
    while send(bundle.port, "/").headers["WWW-Authenticate"] != 'Basic realm="Family chat"':
        assert time.monotonic() < deadline, "nginx did not reload its configuration"
        time.sleep(0.2)

    # the port changes nginx's container and RumiTalk's environment: compose recreates both
    bundle.https_port = free_port()
    bundle.env["RUMISTACK_HTTPS_PORT"] = str(bundle.https_port)
    bundle.sh("rumistack render")
    bundle.sh(docs_command("kill -s HUP nginx"))
    assert send(bundle.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200
    assert f"DOMAIN_CLIENT=https://127.0.0.1:{bundle.https_port}" in _rumitalk_env(docker_client, bundle)

    bundle.sh(docs_command(" down"))
    assert bundle.containers(docker_client) == []
    assert docker_client.networks.list(names=[f"{bundle.project}_default"]) == []
    kept = {v.name for v in docker_client.volumes.list(filters={"label": f"{LABEL_PROJECT}={bundle.project}"})}
    config = load_config(bundle.root / ".env", environ=bundle.env)
    assert kept == {f"{bundle.project}_{v}" for v in volumes(services(config, load_secrets(bundle.state_dir)))}

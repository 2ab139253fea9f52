"""RumiTalk configured for real, through `rumistack up`: a key in its
settings file makes the chat answer with the provider's streamed reply, the
key reaches RumiTalk and nothing else, the YAML is checked and applied, an
existing install's secrets move in, and behind a trusted proxy each client
is seen as itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import provider
import pytest
from clirun import PASSWORD, rumistack
from web import basic, chat, login, send

from rumistack.config import load_config
from rumistack.probe import ProbeError
from rumistack.spec import LABEL_PROJECT, network_labels, network_name
from testenv import TEST_LABELS

KEY = f"sk-test-{uuid.uuid4().hex}"
ALICE = {"Authorization": basic("alice", PASSWORD)}


def _network(client: docker.DockerClient, project) -> str:
    """The project's network, made as `up` makes it (so `up` takes it), before `up`: the provider joins it first."""
    config = load_config("/nonexistent", environ={"RUMISTACK_PROJECT": project.name})
    name = network_name(config)
    if not client.networks.list(names=[name]):
        client.networks.create(name, driver="bridge", labels={**network_labels(project.name), **TEST_LABELS})
    return name


@pytest.fixture
def ai(docker_client, test_images, project):
    """The stand-in AI provider on the project's network as `ai`, refusing any key but KEY."""
    container = provider.start(docker_client, test_images["ai"], _network(docker_client, project), KEY)
    yield container
    container.remove(force=True)  # before the project's `down` removes the network


def _up(*args: str) -> str:
    assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code in (0, 2)
    result = rumistack("up", *args)
    assert result.exit_code == 0, result.output
    return result.output


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_key_in_the_settings_file_makes_the_chat_stream_the_providers_reply(project, ai):
    Path("rumitalk.env").write_text(provider.settings(KEY))
    output = _up()
    assert "ai providers: openAI" in output and "no AI provider" not in output

    token = login(project.port)
    endpoints = json.loads(send(project.port, "/api/endpoints", headers=_bearer(token)).body)
    assert list(endpoints) == ["openAI"]
    received = chat(project.port, token, "hello through the proxy")
    tokens = [(event, arrived) for event, arrived in received if "text" in event and not event.get("final")]
    assert "".join(e["text"] for e, _ in tokens) == "Stand-in reply to: hello through the proxy"
    for (event, arrived), (following, _) in zip(tokens, tokens[1:]):
        assert arrived < following["provider_sent"], event  # relayed at once, not gathered first
    assert received[-1][0].get("final") is True
    asked = [r for r in provider.requests(ai) if r["path"].startswith("/v1/chat")]
    assert asked and {r["key"] for r in asked} == {KEY}

    status = rumistack("status")
    assert "ai providers: openAI" in status.output
    as_json = json.loads(rumistack("status", "--json").output)
    assert as_json["ai_providers"] == [{"name": "openAI", "custom": False, "user_provided": False}]


def test_without_a_provider_up_warns_that_the_chat_will_not_answer(project):
    output = _up()
    assert "warning: no AI provider is configured, so the chat will not answer" in output
    assert "ai providers: none" in output
    token = login(project.port)
    assert json.loads(send(project.port, "/api/endpoints", headers=_bearer(token)).body) == {}


def test_a_custom_endpoint_from_the_yaml_answers_and_its_key_comes_from_the_settings(project, ai):
    Path("rumitalk.env").write_text(f"STAND_IN_KEY={KEY}\n")
    Path("rumitalk.yaml").write_text(
        "version: 1.2.1\nendpoints:\n  custom:\n    - name: standin\n      apiKey: \"${STAND_IN_KEY}\"\n"
        f"      baseURL: {provider.BASE_URL}\n      models:\n        default: [stand-in-model]\n")
    assert "ai providers: custom: standin" in _up()
    token = login(project.port)
    received = chat(project.port, token, "custom endpoint", endpoint="standin")
    assert "".join(e["text"] for e, _ in received if not e.get("final")).split()[-2:] == ["custom", "endpoint"]
    asked = [r for r in provider.requests(ai) if r["path"].startswith("/v1/chat")]
    assert {(r["key"], r["model"]) for r in asked} == {(KEY, "stand-in-model")}


def test_a_broken_yaml_is_refused_with_its_line_and_a_changed_one_recreates_rumitalk_only(project):
    Path("rumitalk.yaml").write_text("version: 1.2.1\n")
    _up()
    before = project.container_ids()

    Path("rumitalk.yaml").write_text("version: 1.2.1\ninterface:\n  - a\n  b: c\n")
    broken = rumistack("up")
    assert broken.exit_code == 2
    assert "rumitalk.yaml, line 4, column" in broken.output and "nothing was changed" in broken.output
    assert "Traceback" not in broken.output
    assert project.container_ids() == before

    Path("rumitalk.yaml").write_text("version: 1.2.1\ninterface:\n  privacyPolicy:\n    externalUrl: https://x.test\n")
    _up()
    after = project.container_ids()
    assert {name for name in before if before[name] != after[name]} == {"rumitalk"}


def test_an_existing_installs_secrets_move_in_and_a_conflicting_one_is_refused(project, docker_client):
    Path("rumitalk.env").write_text("JWT_SECRET=the-old-installs-jwt-secret\nCREDS_KEY=" + "ab" * 32 + "\n")
    _up()
    recorded = Path(".rumistack/secrets.env").read_text()
    assert "the-old-installs-jwt-secret" in recorded and "ab" * 32 in recorded
    (rumitalk,) = docker_client.containers.list(filters={"label": [f"{LABEL_PROJECT}={project.name}",
                                                                   "rumistack.service=rumitalk"]})
    environment = rumitalk.attrs["Config"]["Env"]
    assert "JWT_SECRET=the-old-installs-jwt-secret" in environment and f"CREDS_KEY={'ab' * 32}" in environment

    Path("rumitalk.env").write_text("CREDS_KEY=" + "cd" * 32 + "\n")
    refused = rumistack("up")
    assert refused.exit_code == 2
    assert "CREDS_KEY in RumiTalk's settings file differs" in refused.output and "cd" * 32 not in refused.output


def test_the_key_is_only_in_rumitalks_env_file_and_container(project, ai, docker_client):
    Path("rumitalk.env").write_text(provider.settings(KEY))
    outputs = [_up(), rumistack("status").output, rumistack("status", "--json").output,
               rumistack("logs", "--tail", "200").output]
    assert not any(KEY in output for output in outputs)
    holders = [c.name for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project.name}"})
               if KEY in json.dumps(c.attrs)]
    assert holders == [f"{project.name}-rumitalk"]
    # `up` hands the settings to the container itself: nothing in the state directory holds the key
    assert not [p for p in Path(".rumistack").rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    compose_files = [p for p in Path(__file__).parents[2].joinpath("compose").iterdir() if p.is_file()]
    assert not any(KEY in p.read_text() for p in compose_files)


def test_rumitalks_log_lines_land_in_the_logs_volume(project, docker_client, test_images):
    _up()
    send(project.port, "/api/config")
    listing = docker_client.containers.run(
        test_images["nginx"], ["sh", "-c", "cat /logs/*.log"], remove=True, labels=TEST_LABELS,
        volumes={f"{project.name}_rumitalk-logs": {"bind": "/logs", "mode": "ro"}}).decode()
    assert "/api/config" in listing


OUTER = """
events {}
http {
    access_log off;
    server {
        listen 80;
        location / {
            # the client address this proxy vouches for: chosen by the test for each request
            proxy_set_header X-Forwarded-For $http_x_test_client;
            proxy_set_header Host $host;
            proxy_pass http://nginx:80;
        }
    }
}
"""


@pytest.fixture
def outer_proxy(docker_client, test_images, project, tmp_path):
    """Starts an nginx in front of the stack's, on the stack's network (once the stack's nginx is up: it
    resolves its name at start), that sends X-Forwarded-For as each test request asks (X-Test-Client): a
    tunnel or a NAS's reverse proxy, seen from rumistack. Gives its published port and its address."""
    (tmp_path / "outer.conf").write_text(OUTER)
    started = []

    def start() -> tuple[int, str]:
        container = docker_client.containers.run(
            test_images["nginx-bookworm"], ["nginx", "-c", "/outer.conf", "-g", "daemon off;"], detach=True,
            labels=TEST_LABELS, network=_network(docker_client, project), ports={"80/tcp": ("127.0.0.1", None)},
            volumes={str(tmp_path / "outer.conf"): {"bind": "/outer.conf", "mode": "ro"}})
        started.append(container)
        for _ in range(100):
            container.reload()
            ports = container.attrs["NetworkSettings"]["Ports"].get("80/tcp")
            if container.status == "running" and ports and _answers(int(ports[0]["HostPort"])):
                address = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
                return int(ports[0]["HostPort"]), address
            time.sleep(0.1)
        raise AssertionError(f"the outer proxy did not start:\n{container.logs().decode()[-2000:]}")

    yield start
    for container in started:
        container.remove(force=True)


def _answers(port: int) -> bool:
    """The outer proxy answers HTTP (Docker publishes its port before its nginx listens)."""
    try:
        return send(port, "/health").status == 200
    except ProbeError:
        return False


def _until_throttled(port: int, client: str, limit: int = 40) -> int:
    """Wrong passwords from `client`, paced under the total limit (2 a second), until the per-address limit
    answers 429; how many it took. Each for a name of its own, so that no name's limit is reached first."""
    for attempt in range(1, limit + 1):
        answer = send(port, "/", headers={"Authorization": basic(f"guess{attempt}", "wrong"), "X-Test-Client": client})
        if answer.status == 429:
            return attempt
        assert answer.status == 401, answer.status
        time.sleep(0.6)
    raise AssertionError(f"{client} was never throttled in {limit} attempts")


def test_behind_a_trusted_proxy_each_client_is_throttled_and_logged_as_itself(project, outer_proxy):
    _up()
    port, outer_address = outer_proxy()
    # without the setting, both clients are the outer proxy: one shared limit
    _until_throttled(port, "198.51.100.7")
    shared = send(port, "/", headers={"Authorization": basic("alice", "wrong"), "X-Test-Client": "198.51.100.8"})
    assert shared.status == 429

    Path(".env").write_text(f"RUMISTACK_TRUSTED_PROXIES={outer_address}\n")
    _up()
    _until_throttled(port, "198.51.100.7")
    alone = send(port, "/", headers={"Authorization": basic("bob", "wrong"), "X-Test-Client": "198.51.100.8"})
    assert alone.status == 401  # the other client's own limit is untouched
    served = send(port, "/", headers={**ALICE, "X-Test-Client": "198.51.100.9"})
    assert served.status == 200
    assert served.seen_header("X-Real-IP") == "198.51.100.9"
    assert served.seen_header("X-Forwarded-For").split(",")[-1].strip() == "198.51.100.9"  # RumiTalk trusts one hop
    logs = rumistack("logs", "verifier", "--tail", "400").output  # the verifier logs the failures
    assert 'client: 198.51.100.7' in logs and 'client: 198.51.100.8' in logs


def test_the_compose_bundle_takes_the_same_settings_and_its_chat_streams_the_reply(compose_proxy, docker_client):
    bundle = compose_proxy.bundle
    token = login(compose_proxy.port)
    received = chat(compose_proxy.port, token, "hello through the bundle")
    tokens = [(event, arrived) for event, arrived in received if "text" in event and not event.get("final")]
    assert "".join(e["text"] for e, _ in tokens) == "Stand-in reply to: hello through the bundle"
    for (event, arrived), (following, _) in zip(tokens, tokens[1:]):
        assert arrived < following["provider_sent"], event
    key = compose_proxy.provider_key
    assert {r["key"] for r in compose_proxy.ai_requests() if r["path"].startswith("/v1/chat")} == {key}
    # the key: in RumiTalk's env file in the state directory (0600) and RumiTalk's container, nowhere else
    state = [p for p in bundle.state_dir.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert [p.relative_to(bundle.state_dir).as_posix() for p in state] == ["compose/rumitalk.env"]
    assert state[0].stat().st_mode & 0o777 == 0o600
    assert key not in (bundle.root / "compose" / "docker-compose.yml").read_text()
    holders = [c.labels["com.docker.compose.service"] for c in bundle.containers(docker_client)
               if key in json.dumps(c.attrs)]
    assert holders == ["rumitalk"]


def _doc_block(page: str, heading: str) -> list[str]:
    """The command lines of the first code block under `heading` in docs/`page`."""
    text = (Path(__file__).parents[2] / "docs" / page).read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("\n```\n", 1)[1].split("\n```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_moving_an_existing_install_in_as_the_docs_say(project, docker_client, test_images, tmp_path):
    old = tmp_path / "old-install"
    (old / "images" / "u1").mkdir(parents=True)
    (old / "uploads").mkdir()
    (old / "images" / "u1" / "avatar.png").write_bytes(b"PNG old avatar")
    (old / "uploads" / "notes.pdf").write_bytes(b"%PDF old upload")
    (old / ".env").write_text(f"OPENAI_API_KEY={KEY}\nALLOW_REGISTRATION=false\nJWT_SECRET=old-jwt-secret\n"
                              f"JWT_REFRESH_SECRET=old-refresh-secret\nCREDS_KEY={'ef' * 32}\nCREDS_IV={'01' * 16}\n")
    (old / "librechat.yaml").write_text("version: 1.2.1\ninterface:\n  privacyPolicy:\n    externalUrl: https://x.test\n")
    Path("alice.password").write_text(PASSWORD + "\n")
    # the old install's MongoDB, outside the stack
    old_mongo = docker_client.containers.run(
        test_images["mongodb"], detach=True, labels=TEST_LABELS, network=_network(docker_client, project),
        networking_config={_network(docker_client, project): docker_client.api.create_endpoint_config(
            aliases=["old-mongo"])})
    try:
        env = {**os.environ, "OLD": str(old), "OLD_MONGO_URI": "mongodb://old-mongo:27017/LibreChat",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # this rumistack
        for command in _doc_block("rumitalk.md", "moving an existing RumiTalk in"):
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=env, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        assert set(project.container_ids()) == {"rumitalk", "verifier", "nginx"}  # the old MongoDB, no container of ours
        assert "JWT_SECRET=old-jwt-secret" in Path(".rumistack/secrets.env").read_text()
        (rumitalk,) = docker_client.containers.list(filters={"label": [f"{LABEL_PROJECT}={project.name}",
                                                                       "rumistack.service=rumitalk"]})
        environment = rumitalk.attrs["Config"]["Env"]
        assert "MONGO_URI=mongodb://old-mongo:27017/LibreChat" in environment
        assert {"JWT_SECRET=old-jwt-secret", f"CREDS_KEY={'ef' * 32}", "ALLOW_REGISTRATION=false"} <= set(environment)
        assert any(e.startswith("CONFIG_PATH=/app/config/librechat-") for e in environment)
        copied = docker_client.containers.run(
            test_images["nginx"], ["sh", "-c", "cat /images/u1/avatar.png /uploads/notes.pdf"], remove=True,
            labels=TEST_LABELS, volumes={f"{project.name}_rumitalk-images": {"bind": "/images", "mode": "ro"},
                                         f"{project.name}_rumitalk-uploads": {"bind": "/uploads", "mode": "ro"}})
        assert copied == b"PNG old avatar%PDF old upload"
        assert send(project.port, "/", headers=ALICE).status == 200
    finally:
        rumistack("down")
        old_mongo.remove(force=True)

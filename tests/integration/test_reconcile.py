"""`up` reconciles: each change touches only what it must; RumiTalk's data and
secrets outlive containers; user changes, reloads and a no-change `up` drop
no request while traffic flows."""

from __future__ import annotations

import io
import threading
import time

import pytest
from clirun import PASSWORD, rumistack
from web import basic, login, send

from rumistack.probe import ProbeError
from testenv import TEST_LABELS


@pytest.fixture
def variant(docker_client):
    """A copy of an image with another id, as a new release of it would have."""
    made = []

    def build(image: str) -> str:
        tag = f"{image.rsplit(':', 1)[0]}:variant"
        dockerfile = f"FROM {image}\nLABEL rumistack.test.variant=1\n".encode()
        docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, labels=TEST_LABELS, rm=True)
        made.append(tag)
        return tag

    yield build
    for tag in made:
        docker_client.images.remove(tag, force=True)


def _up(**env) -> str:
    result = rumistack("up")
    assert result.exit_code == 0, result.output
    return result.output


def _realm(port: int) -> str:
    return send(port, "/").headers["WWW-Authenticate"]


def test_each_change_recreates_only_what_it_must(running_project, monkeypatch, test_images, variant):
    ids = running_project.container_ids()
    assert set(ids) == {"mongodb", "rumitalk", "verifier", "nginx"}

    def changed() -> set[str]:
        nonlocal ids
        now = running_project.container_ids()
        different = {s for s in set(now) | set(ids) if now.get(s) != ids.get(s)}
        ids = now
        return different

    # the realm lives in nginx.conf: a graceful reload, no new container
    monkeypatch.setenv("RUMISTACK_REALM", "Changed Realm")
    assert "reloaded nginx" in _up()
    assert changed() == set()
    assert _realm(running_project.port) == 'Basic realm="Changed Realm"'

    # search: Meilisearch joins, RumiTalk gets its address and key (new environment)
    monkeypatch.setenv("RUMISTACK_SEARCH", "true")
    _up()
    assert changed() == {"meilisearch", "rumitalk"}

    # a new MongoDB image: only MongoDB
    monkeypatch.setenv("RUMISTACK_MONGO_IMAGE", variant(test_images["mongodb"]))
    _up()
    assert changed() == {"mongodb"}

    # a new nginx image: only nginx
    monkeypatch.setenv("RUMISTACK_NGINX_IMAGE", variant(test_images["nginx"]))
    _up()
    assert changed() == {"nginx"}

    # search off: Meilisearch goes, RumiTalk loses its address; the index stays
    monkeypatch.setenv("RUMISTACK_SEARCH", "false")
    _up()
    assert changed() == {"meilisearch", "rumitalk"}
    assert "meili-data" in running_project.volume_names()

    # nothing changed: nothing happens
    output = _up()
    assert changed() == set()
    assert "reloaded" not in output and "creating" not in output and "replacing" not in output


def test_data_and_secrets_survive_down_and_only_down_volumes_removes_data(running_project, docker_client, tmp_path):
    def rumitalk_env() -> dict[str, str]:
        container = docker_client.containers.get(running_project.container_ids()["rumitalk"])
        return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])

    secrets = (tmp_path / ".rumistack" / "secrets.env").read_text()
    before = rumitalk_env()
    assert f"JWT_SECRET={before['JWT_SECRET']}\n" in secrets
    assert rumistack("down").exit_code == 0
    assert {"mongodb-data", "rumitalk-uploads", "rumitalk-images", "rumitalk-logs"} <= running_project.volume_names()
    _up()
    assert {k: rumitalk_env()[k] for k in ("JWT_SECRET", "JWT_REFRESH_SECRET", "CREDS_KEY", "CREDS_IV")} == {
        k: before[k] for k in ("JWT_SECRET", "JWT_REFRESH_SECRET", "CREDS_KEY", "CREDS_IV")}

    refused = rumistack("down", "--volumes", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert "mongodb-data" in running_project.volume_names()
    assert rumistack("down", "--volumes", "--yes").exit_code == 0
    assert running_project.volume_names() == set()
    assert (tmp_path / ".rumistack" / "secrets.env").read_text() == secrets


class Load:
    """Threads sending requests through the proxy, each on a new connection, counting what fails."""

    def __init__(self, port: int, token: str) -> None:
        self.requests = [
            ("/health", {}),
            ("/api/convos", {"Authorization": f"Bearer {token}"}),
            ("/", {"Authorization": basic("loader", PASSWORD)}),
        ]
        self.port, self.sent, self.failures = port, 0, []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(r,)) for r in self.requests]

    def _run(self, request: tuple[str, dict]) -> None:
        path, headers = request
        while not self._stop.is_set():
            try:
                status = send(self.port, path, headers=headers).status
                if status != 200:
                    self.failures.append((path, status))
            except (ProbeError, OSError) as exc:
                self.failures.append((path, repr(exc)))
            self.sent += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def test_user_changes_reloads_and_a_no_change_up_drop_no_request(running_project):
    assert rumistack("adduser", "loader", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    token = login(running_project.port)
    with Load(running_project.port, token) as load:
        steps = [
            ("adduser", "bob", "--password-stdin"),
            ("passwd", "bob", "--password-stdin"),
            ("deluser", "bob"),
            ("reload",),
            ("up",),
        ]
        for step in steps:
            time.sleep(0.5)
            result = rumistack(*step, input=PASSWORD + "\n")
            assert result.exit_code == 0, (step, result.output)
        time.sleep(0.5)
    assert load.failures == []
    assert load.sent > 100

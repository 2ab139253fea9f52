"""The CLI end to end: adduser, up, the auth matrix over the published port,
an idempotent second up, down; and the errors a self-hoster meets."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from clirun import PASSWORD, rumistack
from web import basic, send

def test_adduser_up_matrix_up_again_down(docker_client, project):
    port = project.port
    assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0

    result = rumistack("up")
    assert result.exit_code == 0, result.output
    assert f"RumiTalk is up at http://127.0.0.1:{port}/" in result.output

    alice = {"Authorization": basic("alice", PASSWORD)}
    assert send(port, "/").status == 401
    assert send(port, "/", headers=alice).status == 200
    api = send(port, "/api/x")
    assert api.status == 401 and api.seen["path"] == "/api/x"  # RumiTalk's own answer
    assert send(port, "/health").status == 200
    assert send(port, "/healthz").status == 401

    before = project.container_ids()
    assert set(before) == {"nginx", "rumitalk", "mongodb", "verifier"}
    again = rumistack("up")
    assert again.exit_code == 0, again.output
    assert project.container_ids() == before
    assert "nginx is up to date" in again.output

    status = rumistack("status")
    assert status.exit_code == 0
    assert status.output.count("healthy") == 4
    assert "users: 1" in status.output
    # alice verified once (a miss); refused without credentials and exempt paths are no auth events
    assert "auth, last 5 minutes: 1 verified (1 ok, 0 wrong password, 0 unknown user), 0 throttled, " \
           "cache 0 hits, 1 misses" in status.output
    as_json = json.loads(rumistack("status", "--json").output)
    assert as_json["users"] == 1 and as_json["url"] == f"http://127.0.0.1:{port}/"
    assert {(s["service"], s["health"]) for s in as_json["services"]} == {
        ("nginx", "healthy"), ("rumitalk", "healthy"), ("mongodb", "healthy"), ("verifier", "healthy")}
    minutes = as_json["auth_minutes"]
    assert len(minutes) == 5 and sum(m.get("successes", 0) for m in minutes) == 1
    # the counters, read from the host as docs/operations.md says (its container for the default project's)
    (command,) = [line for line in (Path(__file__).parents[2] / "docs" / "operations.md").read_text().splitlines()
                  if line.startswith("docker exec rumistack-verifier ")]
    command = command.replace("rumistack-verifier", f"{project.name}-verifier", 1)
    metrics = subprocess.run(command.split(), capture_output=True, text=True, timeout=30)
    assert metrics.returncode == 0, metrics.stderr
    assert "rumistack_auth_successes_total 1\n" in metrics.stdout

    logs = rumistack("logs", "nginx", "--tail", "50")
    assert logs.exit_code == 0
    assert 'nginx       | ' in logs.output and '"GET /healthz HTTP/1.1" 401' in logs.output

    # a user added while the stack runs can log in at once
    assert rumistack("adduser", "bob", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    assert send(port, "/", headers={"Authorization": basic("bob", PASSWORD)}).status == 200
    assert project.container_ids() == before

    result = rumistack("down")
    assert result.exit_code == 0, result.output
    assert project.container_ids() == {}
    assert docker_client.networks.list(filters={"label": f"rumistack.project={project.name}"}) == []
    assert project.volume_names() == {
        "nginx-config", "nginx-auth", "mongodb-data", "rumitalk-uploads", "rumitalk-images", "rumitalk-logs",
        "rumitalk-config", "auth-verifier"}
    assert rumistack("users").output.split() == ["alice", "bob"]

    # the next up brings back the same users
    assert rumistack("up").exit_code == 0
    assert send(port, "/", headers=alice).status == 200


def test_deluser_and_passwd_refuse_a_cached_credential_on_the_next_request(project):
    port = project.port
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    rumistack("adduser", "bob", "--password-stdin", input="bobs long password\n")
    assert rumistack("up").exit_code == 0
    alice, bob = {"Authorization": basic("alice", PASSWORD)}, {"Authorization": basic("bob", "bobs long password")}
    assert [send(port, "/", headers=h).status for h in (alice, bob, alice, bob)] == [200] * 4  # now cached

    result = rumistack("deluser", "bob")
    assert "applied to the running stack" in result.output
    assert send(port, "/", headers=bob).status == 401

    assert rumistack("passwd", "alice", "--password-stdin", input="alices new password\n").exit_code == 0
    assert send(port, "/", headers=alice).status == 401
    assert send(port, "/", headers={"Authorization": basic("alice", "alices new password")}).status == 200


def test_up_when_the_port_is_taken_says_so(project):
    port = project.port
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = rumistack("up")
    assert result.exit_code == 4
    assert f"port {port} on 127.0.0.1 is already in use" in result.output
    assert "RUMISTACK_HTTP_PORT" in result.output
    assert "Traceback" not in result.output


def test_up_with_an_image_that_cannot_be_had_says_so(project, monkeypatch):
    monkeypatch.setenv("RUMITALK_IMAGE", "rumistack-test/does-not-exist:1.0")
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    result = rumistack("up")
    assert result.exit_code == 4
    assert "image rumistack-test/does-not-exist:1.0 is not on this machine and could not be pulled" in result.output


def test_up_names_the_container_that_does_not_get_healthy_and_shows_its_logs(project, monkeypatch, test_images):
    # nginx's image in RumiTalk's place: nothing answers on port 3080
    monkeypatch.setenv("RUMITALK_IMAGE", test_images["nginx"])
    monkeypatch.setenv("RUMISTACK_HEALTH_TIMEOUT", "4")
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    result = rumistack("up")
    assert result.exit_code == 4
    assert "rumitalk is not healthy after 4 s; its last log lines:" in result.output

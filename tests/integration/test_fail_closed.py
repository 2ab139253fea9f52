"""Fail closed: whatever is wrong with the users, the user file link or the
config, nginx never serves protected content; without the verifier (stopped,
killed or frozen) nothing protected gets in, cached credentials neither, while
exemptions are served, and all is back once it returns (Docker restarts a killed
one); without the tmpfs for its cache of verified credentials nginx does not
start; and a config nginx refuses never replaces a good one."""

from __future__ import annotations

import os
import signal
import time

import hardened
import pytest
import verifying
from clirun import PASSWORD, rumistack
from conftest import running_proxy
from web import basic, send

from rumistack import publish
from rumistack.config import load_config
from rumistack.layout import AUTH_DIR, AUTH_TMPFS, CONF_DIR, NGINX_GID, NGINX_RUN, VERIFIER_DIR
from rumistack.spec import AUTH_VOLUME
from rumistack.render import render
from rumistack.users import UserFile
from rumistack.volumes import File
from test_restarts import SERVING, _matrix
from testenv import TEST_LABELS

PROTECTED = ["/", "/assets/index.js", "/healthz"]


@pytest.mark.parametrize("case, user_file", [
    ("no users", File(b"", mode=0o640, gid=NGINX_GID)),
    ("unreadable by nginx", None),  # filled in below: the right content, but root-only
    ("not a user file", File(b"<html>oops</html>\n", mode=0o640, gid=NGINX_GID)),
])
def test_protected_paths_are_never_served_when_the_user_file_is_unusable(docker_client, test_images, tmp_path,
                                                                          case, user_file):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    if user_file is None:
        users = UserFile(tmp_path / "probe")
        users.add("alice", "correct horse battery")
        user_file = File(users.content(), mode=0o600, uid=0, gid=0)
    with running_proxy(docker_client, test_images, tmp_path, files, user_file=user_file) as proxy:
        for path in PROTECTED:
            for headers in ({}, {"Authorization": basic("alice", "correct horse battery")}):
                answer = send(proxy.port, path, headers=headers)
                assert answer.seen is None, (case, path)
                assert answer.status in (401, 403, 500), (case, path, answer.status)
        assert send(proxy.port, "/health").status == 200  # exemptions still work


@pytest.mark.parametrize("case, damage", [
    # the auth volume is read-only in nginx: a helper that mounts it read-write damages it
    ("no link", "rm htpasswd"),
    ("a link to a file that is gone", 'rm "$(readlink htpasswd)"'),
    ("never published: an empty volume", "rm htpasswd*"),
    ("a link out of the volume", "ln -sfn /etc/passwd htpasswd"),
    ("a link to a file of another name", 'cp -p "$(readlink htpasswd)" users && ln -sfn users htpasswd'),
])
def test_a_missing_or_misplaced_user_file_serves_nothing_protected(docker_client, test_images, tmp_path, case, damage):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, test_images, tmp_path, files) as proxy:
        docker_client.containers.run(test_images["nginx"], ["sh", "-ec", f"cd /v && {damage}"], remove=True,
                                      volumes={proxy.volumes.docker_name(AUTH_VOLUME): {"bind": "/v", "mode": "rw"}},
                                      labels=TEST_LABELS)
        for path in PROTECTED:
            challenged = send(proxy.port, path)
            assert challenged.status == 401 and challenged.seen is None, (case, path)
            answer = send(proxy.port, path, headers={"Authorization": basic(proxy.user, proxy.password)})
            assert answer.status in (403, 500) and answer.seen is None, (case, path, answer.status)
        assert send(proxy.port, "/health").status == 200  # exemptions still work


def test_nginx_without_the_cache_tmpfs_does_not_start(docker_client, test_images, tmp_path):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, test_images, tmp_path, files) as proxy:
        container = proxy.nginx.get_wrapped_container()
        volumes = {m["Name"]: {"bind": m["Destination"], "mode": "ro"} for m in container.attrs["Mounts"] if m["Type"] == "volume"}
        assert {v["bind"] for v in volumes.values()} == {CONF_DIR, AUTH_DIR, VERIFIER_DIR}
        without = docker_client.containers.run(
            test_images["nginx"], list(NGINX_RUN), volumes=volumes, tmpfs=hardened.RUN_TMPFS, **hardened.HARDENING,
            extra_hosts={"rumitalk": "127.0.0.1"}, labels=TEST_LABELS, detach=True,
        )
        assert without.wait(timeout=30)["StatusCode"] != 0
        assert f"{AUTH_TMPFS}/cache" in without.logs().decode()


def _refused_without_the_verifier(proxy, credential: dict[str, str]) -> None:
    for path in PROTECTED:
        answer = send(proxy.port, path, headers=credential)
        assert answer.status == 500 and answer.seen is None, (path, answer.status)
        challenged = send(proxy.port, path)  # the challenge needs no verifier
        assert challenged.status == 401 and 'Basic realm="' in challenged.headers["WWW-Authenticate"]
    assert send(proxy.port, "/health").status == 200  # exemptions still work


def _statuses(proxy, credentials: dict[str, dict[str, str]]) -> dict[str, int]:
    return {name: send(proxy.port, "/", headers=headers).status for name, headers in credentials.items()}


def _until(proxy, credentials: dict[str, dict[str, str]], status: int, seconds: float = 5) -> None:
    """Polls until each credential gets `status` at "/", failing after `seconds`: the heartbeat's files
    cover the second before, the current and the next one, so nginx sees a change within about two."""
    deadline = time.monotonic() + seconds
    while (found := _statuses(proxy, credentials)) != dict.fromkeys(credentials, status):
        assert time.monotonic() < deadline, f"not all {status} within {seconds} s: {found}"
        time.sleep(0.1)


def test_a_stopped_verifier_closes_the_door_and_a_killed_one_is_restarted(docker_client, test_images, tmp_path):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, test_images, tmp_path, files) as proxy:
        alice = {"Authorization": basic(proxy.user, proxy.password)}
        assert send(proxy.port, "/", headers=alice).status == 200  # verified, and so cached
        proxy.verifier.stop(timeout=5)
        time.sleep(1.5)  # nginx looks for a heartbeat file once a second at most (open_file_cache_valid)
        _refused_without_the_verifier(proxy, alice)  # the cached credential too: it removed its heartbeat
        assert "its heartbeat and sockets removed" in proxy.verifier_logs()
        proxy.verifier.start()
        verifying.wait_answering(proxy.verifier)
        _until(proxy, {"alice": alice}, 200)

        # its process killed, with the stack's restart policy: Docker restarts it, and all serves again
        proxy.add_user("bob", "bobs own password")  # not cached: the new verifier checks it
        proxy.verifier.reload()
        restarts = proxy.verifier.attrs["RestartCount"]
        os.kill(proxy.verifier.attrs["State"]["Pid"], signal.SIGKILL)
        verifying.wait_answering(proxy.verifier)
        proxy.verifier.reload()
        assert proxy.verifier.attrs["RestartCount"] == restarts + 1
        _until(proxy, {"alice": alice}, 200)
        assert _matrix(proxy.port) == SERVING
        assert send(proxy.port, "/", headers={"Authorization": basic("bob", "bobs own password")}).status == 200


# nginx 1.22 (Debian 12's) and 1.26 (Debian 13's): the heartbeat's name comes from a named capture of a
# regex map on $msec, at run time
@pytest.mark.parametrize("nginx", ["nginx", "nginx-trixie"])
def test_a_killed_or_frozen_verifier_closes_the_door_to_cached_credentials_too(docker_client, test_images, tmp_path,
                                                                                nginx):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, {**test_images, "nginx": test_images[nginx]}, tmp_path, files) as proxy:
        assert test_images[nginx] in proxy.nginx.get_wrapped_container().image.tags
        cached = {"cached": {"Authorization": basic(proxy.user, proxy.password)}}
        unknown = {"Authorization": basic("mallory", "a guess")}
        assert _statuses(proxy, cached) == {"cached": 200}  # verified, and so cached
        assert send(proxy.port, "/", headers=unknown).status == 401

        # polled with the cached credential only: until the heartbeat's files run out, a credential
        # that needs a check would wait for a frozen verifier's answer (proxy_read_timeout)
        def refused() -> None:
            _until(proxy, cached, 500)
            _refused_without_the_verifier(proxy, cached["cached"])
            assert send(proxy.port, "/", headers=unknown).status == 500  # nginx asks no verifier

        # SIGKILL, and no restart: its heartbeat stops, and so nobody gets in until it runs again
        verifier = proxy.verifier
        verifier.update(restart_policy={"Name": "no"})
        try:
            os.kill(verifier.attrs["State"]["Pid"], signal.SIGKILL)
            refused()
            verifier.reload()
            assert (verifier.status, verifier.attrs["State"]["ExitCode"]) == ("exited", 137)  # not restarted
            verifier.start()
        finally:
            verifier.update(restart_policy={"Name": "unless-stopped"})
        verifying.wait_answering(verifier)
        _until(proxy, cached, 200)  # from the cache, as before
        assert send(proxy.port, "/", headers=unknown).status == 401

        # frozen (SIGSTOP of every process of the container): a hung event loop beats no more either
        verifier.pause()
        try:
            refused()
        finally:
            verifier.unpause()
        _until(proxy, cached, 200)
        assert send(proxy.port, "/", headers=unknown).status == 401


def test_nginx_starts_and_serves_exemptions_without_any_verifier(docker_client, test_images, tmp_path):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, test_images, tmp_path, files, verifier=False) as proxy:
        _refused_without_the_verifier(proxy, {"Authorization": basic(proxy.user, proxy.password)})


def test_a_config_nginx_refuses_never_replaces_the_running_one(running_project, monkeypatch):
    port = running_project.port
    ids = running_project.container_ids()

    def broken(*args):
        files = render(*args)
        files["nginx.conf"] = files["nginx.conf"].replace("auth_request off;", "auth_request off", 1)
        return files

    monkeypatch.setattr(publish, "render", broken)
    monkeypatch.setenv("RUMISTACK_REALM", "Changed")
    result = rumistack("up")
    assert result.exit_code == 4
    assert "error: nginx refused the rendered configuration, so nothing was changed" in result.output

    assert running_project.container_ids() == ids
    answer = send(port, "/")
    assert answer.status == 401 and 'realm="RumiTalk"' in answer.headers["WWW-Authenticate"]
    assert send(port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200

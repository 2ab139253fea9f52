"""Fail closed: whatever is wrong with the users or the config, nginx never
serves protected content, and a config nginx refuses never replaces a good one."""

from __future__ import annotations

import pytest
from clirun import PASSWORD, rumistack
from conftest import running_proxy
from web import basic, send

from rumistack import publish
from rumistack.config import load_config
from rumistack.render import render
from rumistack.spec import NGINX_GID
from rumistack.users import UserFile
from rumistack.volumes import File
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


def test_a_missing_user_file_serves_nothing_protected(docker_client, test_images, tmp_path):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, test_images, tmp_path, files) as proxy:
        # the auth volume is read-only in nginx: empty it through a helper that mounts it read-write
        docker_client.containers.run(proxy.image, ["rm", "/v/htpasswd"], remove=True,
                                      volumes={proxy.auth_volume: {"bind": "/v", "mode": "rw"}},
                                      labels=TEST_LABELS)
        answer = send(proxy.port, "/", headers={"Authorization": basic(proxy.user, proxy.password)})
        assert answer.status in (403, 500) and answer.seen is None  # nginx: 403 for a missing file


def test_a_config_nginx_refuses_never_replaces_the_running_one(running_project, monkeypatch):
    port = running_project.port
    ids = running_project.container_ids()

    def broken(*args):
        files = render(*args)
        files["nginx.conf"] = files["nginx.conf"].replace("auth_basic off;", "auth_basic off", 1)
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

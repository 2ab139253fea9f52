"""Config and users into the volumes: the shared function, and the volumes
mounted in the compose bundle's tools container."""

import os
import stat

import pytest

from rumistack.config import load_config
from rumistack.errors import StackError, UserError
from rumistack.mounted import MountedVolumes
from rumistack.publish import publish, push_users
from rumistack.render import digest, render
from rumistack.spec import NGINX_GID
from rumistack.users import UserFile

GOOD = "correct horse battery"


class RecordingVolumes:
    """Volumes that keep what is written, and a check that accepts everything."""

    def __init__(self, existing=("nginx-config", "nginx-auth")):
        self.existing = set(existing)
        self.checked, self.written = [], {}

    def exists(self, volume):
        return volume in self.existing

    def check(self, files):
        self.checked.append(files)

    def write(self, volumes):
        self.written.update(volumes)


@pytest.fixture
def users(tmp_path):
    users = UserFile(tmp_path / "state" / "htpasswd")
    users.add("alice", GOOD)
    return users


def test_publish_checks_the_rendered_config_then_writes_it_and_the_users(users):
    config = load_config("/nonexistent", environ={})
    volumes = RecordingVolumes()
    assert publish(config, users, volumes) == digest(render(config))
    assert volumes.checked == [render(config)]
    assert {name: f.data.decode() for name, f in volumes.written["nginx-config"].items()} == render(config)
    htpasswd = volumes.written["nginx-auth"]["htpasswd"]
    assert (htpasswd.data, htpasswd.mode, htpasswd.uid, htpasswd.gid) == (users.content(), 0o640, 0, NGINX_GID)


def test_publish_refuses_when_no_one_could_log_in(tmp_path):
    volumes = RecordingVolumes()
    with pytest.raises(UserError, match="rumistack adduser NAME"):
        publish(load_config("/nonexistent", environ={}), UserFile(tmp_path / "htpasswd"), volumes)
    assert volumes.written == {}


def test_push_users_writes_only_when_the_auth_volume_exists(users):
    assert push_users(users, RecordingVolumes(existing=())) is False
    volumes = RecordingVolumes()
    assert push_users(users, volumes) is True
    assert list(volumes.written) == ["nginx-auth"]


def test_mounted_volumes_get_each_file_with_its_mode_and_owner(tmp_path, users):
    (tmp_path / "nginx-auth").mkdir()
    (tmp_path / "nginx-auth" / "htpasswd").write_text("old\n")
    assert push_users(users, MountedVolumes(tmp_path)) is True
    written = tmp_path / "nginx-auth" / "htpasswd"
    info = os.stat(written)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, NGINX_GID)
    assert written.read_bytes() == users.content()
    assert os.listdir(tmp_path / "nginx-auth") == ["htpasswd"]  # nothing staged is left behind


def test_mounted_volume_that_is_not_there_is_an_error(tmp_path, users):
    volumes = MountedVolumes(tmp_path)
    assert not volumes.exists("nginx-auth")
    with pytest.raises(StackError, match="nginx-auth is not mounted"):
        volumes.write({"nginx-auth": {}})

"""Config and users into the volumes: the shared function, the volumes
mounted in the compose bundle's tools container, and what `render` adds for
the bundle."""

import os
import stat

import pytest
from dotenv import dotenv_values
from recording import RecordingVolumes
from rumistack import acme, https
from rumistack.appsettings import AppSettings
from rumistack.compose import render_bundle
from rumistack.config import load_config
from rumistack.errors import StackError, UserError
from rumistack.https import Served
from rumistack.layout import NGINX_GID, PEM_FILE, TLS_DIR
from rumistack.mounted import MountedVolumes
from rumistack.publish import publish, push_users
from rumistack.render import render
from rumistack.secretstore import load_secrets
from rumistack.spec import ACME_VOLUME, TLS_VOLUME, services
from rumistack.tls import SELF_SIGNED_CERT, Certificate, now
from rumistack.users import UserFile
from rumistack.volumes import File, user_file_name

GOOD = "correct horse battery"


def _publish(config, users, volumes):
    """What `render` does: publish with the certificate from this host."""
    return publish(config, volumes, https.local(config, now()), lambda message: None, users)


@pytest.fixture
def users(tmp_path):
    users = UserFile(tmp_path / "state" / "htpasswd")
    users.add("alice", GOOD)
    return users


def test_publish_checks_the_rendered_config_with_the_certificate_then_writes_them_and_the_users(users, tmp_path):
    config = load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": str(tmp_path / "state")})
    volumes = RecordingVolumes()
    _publish(config, users, volumes)
    pem = volumes.written["tls"][PEM_FILE]
    assert pem.mode == 0o600
    certificate = Certificate.from_pem(pem.data)
    assert certificate.chain_pem() == (config.self_signed_dir / SELF_SIGNED_CERT).read_bytes()  # made and kept here
    files = render(config, Served(certificate).facts)
    assert volumes.checked == [(files, {f"{TLS_DIR}/{PEM_FILE}": pem})]
    assert {name: f.data.decode() for name, f in volumes.written["nginx-config"].items()} == files
    assert set(volumes.written) == {"nginx-config", "tls"}
    htpasswd = volumes.user_files["nginx-auth"]
    assert (htpasswd.data, htpasswd.mode, htpasswd.uid, htpasswd.gid) == (users.content(), 0o640, 0, NGINX_GID)


def test_publish_writes_the_certificate_only_when_the_volume_holds_another(users, tmp_path):
    config = load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": str(tmp_path / "state")})
    volumes = RecordingVolumes()
    _publish(config, users, volumes)
    _publish(config, users, volumes)
    volumes.written["tls"][PEM_FILE] = File(b"another certificate")
    _publish(config, users, volumes)
    # the users go behind their link each time (publish_user_file), not through write
    assert volumes.writes == [["nginx-config", "tls"], ["nginx-config"], ["nginx-config", "tls"]]


def test_publish_refuses_when_no_one_could_log_in(tmp_path):
    volumes = RecordingVolumes()
    with pytest.raises(UserError, match="rumistack adduser NAME"):
        _publish(load_config("/nonexistent", environ={}), UserFile(tmp_path / "htpasswd"), volumes)
    assert volumes.written == {} and volumes.user_files == {}


def test_push_users_writes_only_when_the_auth_volume_exists(users):
    assert push_users(users, RecordingVolumes(existing=())) is False
    volumes = RecordingVolumes()
    assert push_users(users, volumes) is True
    assert list(volumes.user_files) == ["nginx-auth"] and volumes.written == {}


def test_mounted_volumes_get_each_file_with_its_mode_and_owner(tmp_path):
    (tmp_path / "nginx-config").mkdir()
    MountedVolumes(tmp_path).write({"nginx-config": {"snippets/a.conf": File(b"a\n", mode=0o640, gid=NGINX_GID)}})
    written = tmp_path / "nginx-config" / "snippets" / "a.conf"
    info = os.stat(written)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, NGINX_GID)
    assert written.read_bytes() == b"a\n"
    assert os.listdir(written.parent) == ["a.conf"]  # nothing staged is left behind


def test_mounted_volumes_get_the_users_behind_the_link_with_its_mode_and_owner(tmp_path, users):
    auth = tmp_path / "nginx-auth"
    auth.mkdir()
    (auth / "htpasswd").write_text("old\n")  # a plain file, as rumistack wrote it before the link
    assert push_users(users, MountedVolumes(tmp_path)) is True
    name = user_file_name(users.content())
    assert os.readlink(auth / "htpasswd") == name
    info = os.stat(auth / name)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, NGINX_GID)
    assert (auth / "htpasswd").read_bytes() == users.content()
    assert sorted(os.listdir(auth)) == ["htpasswd", name]  # nothing staged is left behind


def test_mounted_volumes_keep_the_user_file_before_the_current_one_and_no_older(tmp_path):
    auth = tmp_path / "nginx-auth"
    auth.mkdir()
    contents = [b"alice:$2y$12$a\n", b"alice:$2y$12$b\n", b"alice:$2y$12$c\n"]
    for data in contents:
        MountedVolumes(tmp_path).publish_user_file("nginx-auth", File(data, mode=0o640, gid=NGINX_GID))
    _, previous, current = (user_file_name(data) for data in contents)
    assert os.readlink(auth / "htpasswd") == current
    assert sorted(os.listdir(auth)) == sorted(["htpasswd", previous, current])


def test_mounted_volume_that_is_not_there_is_an_error(tmp_path, users):
    volumes = MountedVolumes(tmp_path)
    assert not volumes.exists("nginx-auth")
    with pytest.raises(StackError, match="nginx-auth is not mounted"):
        volumes.write({"nginx-auth": {}})


def test_render_bundle_writes_each_services_environment_as_up_gives_it(tmp_path, users):
    config = load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": str(tmp_path / "state")})
    volumes = RecordingVolumes()
    render_bundle(config, users, volumes, AppSettings())
    assert set(volumes.written) == {"nginx-config", "tls"} and set(volumes.user_files) == {"nginx-auth"}
    for service in services(config, load_secrets(config.state_dir)):
        written = config.state_dir / "compose" / f"{service.name}.env"
        assert dotenv_values(written) == dict(service.environment)
        assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    assert "JWT_SECRET" in (config.state_dir / "compose" / "rumitalk.env").read_text()


@pytest.mark.parametrize("environ, runs, profiles", [
    ({"RUMISTACK_SEARCH": "true"}, {"mongodb", "meilisearch", "rumitalk", "verifier", "nginx"}, ("search",)),
    ({"RUMISTACK_MONGO_URI": "mongodb://db.example.com:27017/chat"}, {"rumitalk", "verifier", "nginx"}, ()),
    ({"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "chat.example.com"},
     {"mongodb", "rumitalk", "verifier", "nginx", "certbot"}, ("acme",)),
], ids=["search", "external mongodb", "acme"])
def test_render_bundle_writes_the_environment_of_each_mode_and_none_for_what_it_does_not_run(tmp_path, users, environ,
                                                                                            runs, profiles):
    environment = tmp_path / "state" / "compose"
    environment.mkdir(parents=True)
    for name in ("mongodb", "meilisearch", "certbot"):  # left by an earlier mode
        (environment / f"{name}.env").write_text("OLD='1'\n")
    config = load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": str(tmp_path / "state"), **environ})
    assert render_bundle(config, users, RecordingVolumes(), AppSettings()) == profiles
    assert {p.stem for p in environment.iterdir()} == runs  # compose refuses to start a service without one
    for service in services(config, load_secrets(config.state_dir)):
        assert dotenv_values(environment / f"{service.name}.env") == dict(service.environment)


def test_render_bundle_in_acme_mode_puts_the_placeholder_and_certbots_hook_in_place(tmp_path, users):
    """What the bundle's certbot needs before it asks: nginx serving a placeholder, and the deploy hook."""
    config = load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": str(tmp_path / "state"),
                                                  "RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "chat.example.com"})
    volumes = RecordingVolumes()
    render_bundle(config, users, volumes, AppSettings())
    assert Certificate.from_pem(volumes.written[TLS_VOLUME][PEM_FILE].data).placeholder
    assert volumes.written[ACME_VOLUME][acme.HOOK].data == acme.install_hook("chat.example.com")


def test_render_bundle_with_plain_http_writes_no_certificate(tmp_path, users):
    config = load_config("/nonexistent", environ={"RUMISTACK_STATE_DIR": str(tmp_path / "state"), "RUMISTACK_TLS": "off"})
    volumes = RecordingVolumes()
    assert render_bundle(config, users, volumes, AppSettings()) == ()
    assert set(volumes.written) == {"nginx-config"} and set(volumes.user_files) == {"nginx-auth"}
    assert {p.stem for p in (tmp_path / "state" / "compose").iterdir()} == {"mongodb", "rumitalk", "verifier", "nginx"}

from datetime import timedelta
from pathlib import Path

import pytest
from certs import NOW, make_ca, write_pair
from click.testing import CliRunner

from rumistack.cli import cli
from rumistack.mounted import MountedVolumes
from rumistack.users import UserFile

GOOD = "correct horse battery"


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Run the CLI in an empty working directory, with a Docker engine that cannot be reached."""
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith(("RUMISTACK_", "RUMITALK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")

    def invoke(*args, input=None):
        return CliRunner().invoke(cli, list(args), input=input)

    return invoke


def test_adduser_reads_the_password_from_stdin(run, tmp_path):
    result = run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    assert result.exit_code == 0, result.output
    assert "added user alice" in result.output
    assert UserFile(tmp_path / ".rumistack" / "htpasswd").names() == ["alice"]


def test_adduser_asks_twice_and_never_shows_the_password(run):
    result = run("adduser", "alice", input=f"{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "Repeat the password" in result.output
    assert GOOD not in result.output


def test_adduser_asks_again_when_the_two_entries_differ(run):
    result = run("adduser", "alice", input=f"{GOOD}\nsomething else\n{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output.lower() or "don't match" in result.output.lower()


def test_users_lists_names_and_deluser_removes_one(run):
    for name in ("bob", "alice"):
        run("adduser", name, "--password-stdin", input=GOOD + "\n")
    assert run("users").output.split() == ["alice", "bob"]
    result = run("deluser", "bob")
    assert result.exit_code == 0
    assert run("users").output.split() == ["alice"]


@pytest.mark.parametrize("command", [["deluser"], ["passwd", "--password-stdin"]])
def test_a_name_no_user_can_have_is_refused_in_one_line_by_deluser_and_passwd(run, command):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    result = run(*command[:1], "a:b", *command[1:], input=GOOD + "\n")
    assert result.exit_code == 2 and result.output == ("error: user name 'a:b' contains ':', which the htpasswd "
                                                       "format uses as separator\n"), result.output


def test_passwd_changes_the_password(run, tmp_path):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    result = run("passwd", "alice", "--password-stdin", input="a new long passphrase\n")
    assert result.exit_code == 0, result.output
    from passlib.apache import HtpasswdFile

    assert HtpasswdFile(str(tmp_path / ".rumistack" / "htpasswd")).check_password("alice", "a new long passphrase")


def test_short_password_is_saved_with_a_warning(run):
    result = run("adduser", "alice", "--password-stdin", input="short\n")
    assert result.exit_code == 0
    assert "warning: the password is shorter than 12 characters" in result.output


def test_too_long_password_fails_with_one_line_and_no_traceback(run):
    result = run("adduser", "alice", "--password-stdin", input="p" * 80 + "\n")
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "72 bytes" in result.output
    assert "Traceback" not in result.output
    assert run("users").output == ""


def test_deluser_of_unknown_user_fails(run):
    result = run("deluser", "ghost")
    assert result.exit_code == 2
    assert "there is no user 'ghost'" in result.output


def test_up_without_users_says_how_to_add_one(run):
    result = run("up")
    assert result.exit_code == 2
    assert "rumistack adduser NAME" in result.output


def test_invalid_config_names_the_key(run, tmp_path):
    (tmp_path / ".env").write_text('RUMISTACK_REALM="bad;realm"\n')
    result = run("status")
    assert result.exit_code == 2
    assert "RUMISTACK_REALM" in result.output
    assert "Traceback" not in result.output


def test_unreachable_docker_engine_is_one_clear_line(run):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    for command in ("up", "render", "status", "down"):
        result = run(command)
        assert result.exit_code == 3, (command, result.output)
        assert "cannot reach the Docker engine" in result.output
        assert "Traceback" not in result.output


def test_adduser_works_while_docker_is_unreachable(run):
    result = run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    assert result.exit_code == 0
    assert "applied to the running stack" not in result.output


def test_env_file_option_reads_another_file(run, tmp_path):
    (tmp_path / "other.env").write_text("RUMISTACK_STATE_DIR=elsewhere\n")
    run("--env-file", "other.env", "adduser", "alice", "--password-stdin", input=GOOD + "\n")
    assert (tmp_path / "elsewhere" / "htpasswd").exists()


def test_help_lists_every_command(run):
    result = run("--help")
    for command in ("adduser", "deluser", "passwd", "users", "up", "render", "down", "status"):
        assert command in result.output


def test_up_over_plain_http_on_the_network_warns_and_asks_first(run):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    (Path.cwd() / ".env").write_text("RUMISTACK_TLS=off\n")
    result = run("up", input="n\n")
    assert result.exit_code == 1
    assert "Basic Auth passwords, and the chats, cross the network readable" in result.output
    assert "Start without HTTPS anyway? [y/N]" in result.output
    assert "cannot reach the Docker engine" not in result.output  # stopped before doing anything


def test_up_over_plain_http_with_yes_does_not_ask(run):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    (Path.cwd() / ".env").write_text("RUMISTACK_TLS=off\n")
    result = run("up", "--yes")
    assert "cross the network readable" in result.output
    assert "[y/N]" not in result.output
    assert "cannot reach the Docker engine" in result.output  # went on


def test_up_over_plain_http_bound_to_loopback_does_not_ask(run):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    (Path.cwd() / ".env").write_text("RUMISTACK_TLS=off\nRUMISTACK_BIND_ADDRESS=127.0.0.1\n")
    result = run("up")
    assert "[y/N]" not in result.output and "passwords never leave this machine" in result.output
    assert "cannot reach the Docker engine" in result.output


@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.mark.parametrize("case, message", [
    ("mismatched key", "the key in {key} does not belong to the certificate in {cert}"),
    ("expired", "the certificate in {cert} expired on"),
    ("wrong domain", "the certificate in {cert} is for www.example.com, not for RUMISTACK_DOMAIN=chat.example.com"),
])
def test_up_refuses_unusable_certificate_files_before_touching_anything(run, tmp_path, ca, case, message):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    server = {
        "mismatched key": ca.issue(["chat.example.com"]),
        "expired": ca.issue(["chat.example.com"], NOW - timedelta(days=90), NOW - timedelta(days=1)),
        "wrong domain": ca.issue(["www.example.com"]),
    }[case]
    cert, key = write_pair(tmp_path, server)
    if case == "mismatched key":
        _, key = write_pair(tmp_path, ca.issue(["chat.example.com"]), "other")
    (tmp_path / ".env").write_text(f"RUMISTACK_TLS=files\nRUMISTACK_DOMAIN=chat.example.com\n"
                                   f"RUMISTACK_TLS_CERT_FILE={cert}\nRUMISTACK_TLS_KEY_FILE={key}\n")
    result = run("up")
    assert result.exit_code == 2
    assert result.output.startswith("error: " + message.format(cert=cert, key=key))
    assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output


def test_up_makes_the_self_signed_certificate_once_even_before_docker_answers(run, tmp_path):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    run("up")
    kept = (tmp_path / ".rumistack" / "tls" / "self-signed.crt").read_bytes()
    run("up")
    assert (tmp_path / ".rumistack" / "tls" / "self-signed.crt").read_bytes() == kept


def test_adduser_with_mounted_volumes_writes_the_auth_volume_without_docker(run, tmp_path, monkeypatch):
    (tmp_path / "volumes" / "nginx-auth").mkdir(parents=True)
    monkeypatch.setenv("RUMISTACK_VOLUMES_DIR", str(tmp_path / "volumes"))
    result = run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    assert result.exit_code == 0, result.output
    assert "applied to the running stack" in result.output
    assert (tmp_path / "volumes" / "nginx-auth" / "htpasswd").read_bytes() == (tmp_path / ".rumistack" / "htpasswd").read_bytes()


def test_render_without_users_says_how_to_add_one(run, tmp_path):
    (tmp_path / "volumes").mkdir()
    result = run("--volumes-dir", str(tmp_path / "volumes"), "render")
    assert result.exit_code == 2
    assert "rumistack adduser NAME" in result.output


@pytest.mark.parametrize("address, says", [
    ("0.0.0.0", "warning: HTTPS is off (RUMISTACK_TLS=off) and nginx listens on 0.0.0.0: Basic Auth passwords"),
    ("127.0.0.1", "note: HTTPS is off (RUMISTACK_TLS=off); bound to 127.0.0.1, so passwords never leave this machine"),
])
def test_render_with_https_off_says_what_up_would_ask_about(run, tmp_path, monkeypatch, address, says):
    """compose starts what render prepared without a question, so render gives up's warning (and no question)."""
    checked = []
    monkeypatch.setattr(MountedVolumes, "check", lambda self, files, others, test=None: checked.append(files))
    for volume in ("nginx-config", "nginx-auth", "tls", "rumitalk-config"):
        (tmp_path / "volumes" / volume).mkdir(parents=True)
    monkeypatch.setenv("RUMISTACK_VOLUMES_DIR", str(tmp_path / "volumes"))
    (tmp_path / ".env").write_text(f"RUMISTACK_TLS=off\nRUMISTACK_BIND_ADDRESS={address}\n")
    assert run("adduser", "alice", "--password-stdin", input=GOOD + "\n").exit_code == 0
    result = run("render")
    assert result.exit_code == 0, result.output
    assert "wrote the nginx configuration, the users and the services' environment for rumistack" in result.output
    assert says in result.output and "anyway?" not in result.output
    assert checked and (tmp_path / "volumes" / "nginx-config" / "nginx.conf").exists()

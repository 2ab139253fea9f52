"""Failures of the disk, of the state directory and of the engine, and the project lock, through the CLI:
each is one line and a known exit code, never a traceback, and nothing rumistack wrote is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import docker.errors
import pytest
import requests.exceptions
from click.testing import CliRunner

from rumistack import cli as cli_module
from rumistack import lock
from rumistack.cli import cli
from rumistack.errors import Unexpected
from rumistack.users import UserFile

GOOD = "correct horse battery"
RUMISTACK = str(Path(sys.executable).with_name("rumistack"))


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("RUMISTACK_", "RUMITALK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")

    def invoke(*args, input=None, state=None):
        env = {"RUMISTACK_STATE_DIR": str(state)} if state is not None else {}
        return CliRunner().invoke(cli, list(args), input=input, env=env)

    return invoke


def one_line(result, code: int) -> str:
    """The error line of `result`, which exited with `code`."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@contextmanager
def tmpfs(path: Path, size: str = "64k"):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> None:
    """Fill the file system of `path` to the last byte."""
    with open(path / "filler", "ab", buffering=0) as out:
        for chunk in (4096, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError:
                pass


def test_a_full_disk_during_adduser_is_one_line_and_keeps_the_user_file(run, tmp_path):
    with tmpfs(tmp_path / "state") as state:
        assert run("adduser", "alice", "--password-stdin", input=GOOD + "\n", state=state).exit_code == 0
        before = (state / "htpasswd").read_bytes()
        fill(state)
        line = one_line(run("adduser", "bob", "--password-stdin", input=GOOD + "\n", state=state), 6)
        assert "No space left on device" in line and "htpasswd" in line and "free some space" in line
        assert (state / "htpasswd").read_bytes() == before
        assert [p.name for p in state.iterdir() if p.name.startswith(".")] == []  # no temporary file left
        assert run("users", state=state).output.split() == ["alice"]


@pytest.mark.parametrize("command", ["up", "render"])
def test_a_full_disk_during_up_and_render_is_one_line_and_keeps_the_files(run, tmp_path, command):
    with tmpfs(tmp_path / "state") as state:
        assert run("adduser", "alice", "--password-stdin", input=GOOD + "\n", state=state).exit_code == 0
        before = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
        fill(state)
        result = run(command, state=state)
        # up writes the self-signed certificate before it needs the engine; render asks the engine first
        line = one_line(result, 6 if command == "up" else 3)
        assert ("No space left on device" in line) if command == "up" else ("cannot reach the Docker engine" in line)
        after = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file() and p.name != "filler"}
        assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items() if k != "filler"}
        assert [p for p in state.rglob(".*") if p.is_file()] == []  # no temporary file left


def test_secrets_are_written_whole_or_not_at_all(tmp_path):
    from rumistack.secretstore import load_secrets

    with tmpfs(tmp_path / "state") as state:
        fill(state)
        with pytest.raises(Exception) as raised:
            load_secrets(state)
        assert "No space left on device" in str(raised.value)
        assert (state / "secrets.env").read_bytes() == b""  # never a half secret, kept for good
        (state / "filler").unlink()
        assert len(load_secrets(state)) == 5


@pytest.mark.parametrize("kind", ["file", "dangling link", "read-only"])
@pytest.mark.parametrize("command", [("adduser", "alice", "--password-stdin"), ("up",), ("render",), ("down",)])
def test_an_unusable_state_directory_is_one_line(run, tmp_path, kind, command):
    state = tmp_path / "state"
    if kind == "file":
        state.write_text("not a directory\n")
        words = "a file is in the way"
    elif kind == "dangling link":
        state.symlink_to(tmp_path / "missing")
        words = "symbolic link"
    else:
        context = tmpfs(state, "1m")
        context.__enter__()
        UserFile(state / "htpasswd").add("alice", GOOD)
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        words = "Read-only file system"
    try:
        line = one_line(run(*command, input=GOOD + "\n", state=state), 6)
        assert words in line and str(state) in line, line
    finally:
        if kind == "read-only":
            context.__exit__(None, None, None)


def test_a_env_file_with_bytes_that_are_not_utf8_names_the_line(run, tmp_path):
    (tmp_path / ".env").write_bytes(b"RUMISTACK_DOMAIN=chat.example.com\nRUMISTACK_REALM=R\xe9alm\n")
    line = one_line(run("status"), 2)
    assert ".env is not UTF-8 text: line 2" in line


def test_an_unreadable_env_file_is_one_line(run, tmp_path):
    (tmp_path / ".env").mkdir()  # a directory where the file should be; --env-file's own check passes it
    result = run("--env-file", str(tmp_path / ".env" / "x"), "users")
    assert result.exit_code == 0  # a missing file means the defaults
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    one_line(run("--env-file", str(tmp_path / "loop"), "users"), 6)


@pytest.mark.parametrize("exc, code, words", [
    (requests.exceptions.ConnectionError("Connection aborted"), 3, "lost the Docker engine while"),
    (docker.errors.ImageNotFound("No such image: x:1"), 4, "an image went away while"),
    (docker.errors.APIError("409", explanation='Conflict. The container name "/p-rumitalk" is already in use by '
                            'container "abc"'), 4, "is not part of this project"),
    (docker.errors.APIError("500", explanation="the engine had a bad day"), 4, "the engine had a bad day"),
    (docker.errors.DockerException("Error while fetching server API version"), 3, "cannot be used while"),
    (PermissionError(13, "Permission denied", "/somewhere"), 6, "Permission denied (/somewhere)"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2, "not UTF-8"),
    (KeyError("boom"), Unexpected.exit_code, "a bug in rumistack; run it again with --debug"),
])
def test_any_failure_of_a_command_is_one_line_naming_what_it_was_doing(run, monkeypatch, exc, code, words):
    if type(exc) is docker.errors.APIError:
        exc.response = requests.Response()
        exc.response.status_code, exc.response.url = int(exc.args[0]), "http+docker://localhost/v1.41/x"
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(cli_module.stack, "up", fail)
    monkeypatch.setattr(cli_module.stack, "connect", fail if code != 3 else cli_module.stack.connect)
    line = one_line(run("up"), code)
    assert words in line and "bringing the stack up" in line, line


def test_debug_shows_the_traceback(run, monkeypatch):
    monkeypatch.setattr(cli_module.stack, "status", lambda config: {}["boom"])
    for args, env in ((["--debug", "status"], {}), (["status"], {"RUMISTACK_DEBUG": "1"})):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == Unexpected.exit_code
        assert "Traceback" in result.output and "KeyError" in result.output
        assert result.output.strip().splitlines()[-1].startswith("error: an unexpected KeyError while reading")


HOLD = """
import sys, time
from rumistack import lock
with lock.hold(sys.argv[1], "p", "up", 5):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def holder(state: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(state), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_command_waits_for_the_lock_saying_who_holds_it(tmp_path):
    process = holder(tmp_path, 1.5)
    lines = []
    started = time.monotonic()
    with lock.hold(tmp_path, "p", "down", 30, notice=lines.append):
        waited = time.monotonic() - started
    process.wait()
    assert 0.5 < waited < 10
    assert len(lines) == 1 and f"`rumistack up` (pid {process.pid})" in lines[0], lines


def test_the_lock_times_out_with_one_line_and_its_exit_code(run, tmp_path):
    run("adduser", "alice", "--password-stdin", input=GOOD + "\n")
    process = holder(tmp_path / ".rumistack", 30)
    try:
        result = CliRunner().invoke(cli, ["down"], env={"RUMISTACK_LOCK_TIMEOUT": "1", "RUMISTACK_PROJECT": "p"})
        line = one_line(result, 5)
        assert f"`rumistack up` (pid {process.pid}) since " in line
        assert "still holds the lock of project p after 1 s" in line
        assert "waiting for `rumistack up`" in result.output
        # the commands that only read never wait
        for command in (["status"], ["users"], ["logs"]):
            started = time.monotonic()
            CliRunner().invoke(cli, command, env={"RUMISTACK_PROJECT": "p"})
            assert time.monotonic() - started < 1
    finally:
        process.kill()
        process.wait()


def test_a_killed_holder_releases_the_lock_and_its_temporary_files_go(tmp_path):
    process = holder(tmp_path, 60)
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / ".self-signed.key.ab12cd34").write_text("half")
    process.kill()
    process.wait()
    started = time.monotonic()
    with lock.hold(tmp_path, "p", "up", 5):
        assert time.monotonic() - started < 1
    assert list((tmp_path / "tls").iterdir()) == []


def test_sigterm_runs_the_cleanup(tmp_path):
    """SIGTERM raises SystemExit in the CLI, so cleanup blocks run (here: the lock's record goes)."""
    env = {**os.environ, "RUMISTACK_STATE_DIR": str(tmp_path), "DOCKER_HOST": f"unix://{tmp_path}/none.sock",
           "RUMISTACK_PROJECT": "p"}
    waiting = holder(tmp_path, 60)
    second = subprocess.Popen([RUMISTACK, "down"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert "waiting for" in second.stderr.readline()
    second.terminate()
    assert second.wait(10) == 128 + 15
    assert "Traceback" not in second.stderr.read()
    waiting.kill()
    waiting.wait()

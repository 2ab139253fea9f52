"""The CLI against a real engine that fails, and commands at once: each
failure is one line and a known exit code; concurrent commands wait for
the project lock and say so; a command killed at any moment leaves nothing
the next one does not clean up, and the next one converges."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from clirun import PASSWORD, free_port, rumistack
from web import basic, send

from rumistack.layout import AUTH_DIR, CONF_DIR, TLS_DIR
from rumistack.spec import LABEL_PROJECT
from rumistack.users import UserFile
from rumistack.volumes import user_file_name
from testenv import TEST_LABELS

RUMISTACK = str(Path(sys.executable).with_name("rumistack"))


def one_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def start(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The CLI as a process of its own, in this test's working directory and environment."""
    process = subprocess.Popen([RUMISTACK, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    if input is not None:
        process.stdin.write(input)
    process.stdin.close()
    return process


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output = process.stdout.read()
    return process.wait(timeout), output


def helpers(project) -> list:
    return project.client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={project.name}",
                                                                        "rumistack.role=helper"]})


def staged(project) -> list[str]:
    """Staged or temporary files in the volumes the running nginx mounts."""
    (nginx,) = project.client.containers.list(filters={"label": [f"{LABEL_PROJECT}={project.name}",
                                                                 "rumistack.service=nginx"]})
    dirs = " ".join(d for d in (CONF_DIR, AUTH_DIR, TLS_DIR))
    code, output = nginx.exec_run(["sh", "-c", f"for d in {dirs}; do [ -d $d ] && ls -A $d; done; true"])
    return [name for name in output.decode().split() if name.startswith(("rumistack-stage-", "."))]


def test_a_container_name_taken_by_another_project_is_one_line(project, test_images):
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    foreign = project.client.containers.create(test_images["nginx"], name=f"{project.name}-rumitalk",
                                               command=["true"], labels=TEST_LABELS)
    try:
        line = one_line(rumistack("up"), 4)
        assert f"{project.name}-rumitalk" in line and "is not part of this project" in line, line
        assert "bringing the stack up" in line
    finally:
        foreign.remove(force=True)
    assert rumistack("up").exit_code == 0


def test_an_image_removed_between_checks_is_one_line(project, test_images, monkeypatch):
    from rumistack import stack

    copy = f"rumistack-test/stub-copy-{uuid.uuid4().hex[:8]}:1"
    project.client.images.get(test_images["rumitalk"]).tag(copy)
    monkeypatch.setenv("RUMITALK_IMAGE", copy)
    found = stack.image_id

    def then_removed(client, ref, progress):
        image = found(client, ref, progress)
        if ref == copy:
            client.images.remove(copy)  # the tag only: the stand-in stays
        return image

    monkeypatch.setattr(stack, "image_id", then_removed)
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    line = one_line(rumistack("up"), 4)
    assert "an image went away while bringing the stack up" in line and copy in line, line
    assert helpers(project) == []


class EngineProxy:
    """A unix socket in front of the engine's that stops answering (closes every connection, takes no
    new one) when a request contains `cut_on`."""

    def __init__(self, path: Path, cut_on: bytes) -> None:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        assert host.startswith("unix://"), host
        self.upstream, self.cut_on, self.path = host.removeprefix("unix://"), cut_on, path
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen()
        self.sockets: list[socket.socket] = [self.listener]
        self.cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.upstream)
            self.sockets += [client, engine]
            threading.Thread(target=self._pump, args=(client, engine, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, watch: bool) -> None:
        try:
            while data := source.recv(65536):
                if watch and self.cut_on in data:
                    self.stop()
                    return
                target.sendall(data)
        except OSError:
            pass

    def stop(self) -> None:
        self.cut.set()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_the_engine_going_away_in_the_middle_of_up_is_one_line(project, monkeypatch, tmp_path):
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    engine = os.environ.get("DOCKER_HOST")
    proxy = EngineProxy(tmp_path / "engine.sock", b"/containers/create?name=")  # the first service container
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")
    try:
        line = one_line(rumistack("up"), 3)
    finally:
        proxy.stop()
    assert proxy.cut.is_set()
    assert "lost the Docker engine while bringing the stack up" in line and "run the command again" in line, line
    if engine is None:
        monkeypatch.delenv("DOCKER_HOST")
    else:
        monkeypatch.setenv("DOCKER_HOST", engine)
    result = rumistack("up")
    assert result.exit_code == 0, result.output
    assert helpers(project) == []


def test_two_ups_at_once_both_succeed_with_one_stack(project):
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    first, second = start("up"), start("up")
    results = [finish(first), finish(second)]
    assert [code for code, _ in results] == [0, 0], results
    assert all("Traceback" not in output for _, output in results)
    assert any("waiting for `rumistack up`" in output for _, output in results), results
    assert set(project.container_ids()) == {"nginx", "verifier", "rumitalk", "mongodb"}
    assert len(project.client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={project.name}"})) == 4
    assert send(project.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200


def wait_for_line(process: subprocess.Popen, words: str, timeout: float = 120) -> list[str]:
    """The lines `process` printed until one containing `words`."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if words in line:
            return lines
    raise AssertionError(f"no {words!r} in {lines}")


def test_up_then_down_at_once_ends_down(project):
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    up = start("up")
    wait_for_line(up, "creating")  # it holds the lock
    down = start("down")
    (code_up, out_up), (code_down, out_down) = finish(up), finish(down)
    assert (code_up, code_down) == (0, 0), (out_up, out_down)
    assert "waiting for `rumistack up`" in out_down
    assert project.container_ids() == {}
    assert helpers(project) == []


def test_up_then_reload_at_once_both_succeed(project):
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    up = start("up")
    wait_for_line(up, "creating")
    reload = start("reload", env={"RUMISTACK_REALM": "After up"})
    (code_up, out_up), (code_reload, out_reload) = finish(up), finish(reload)
    assert (code_up, code_reload) == (0, 0), (out_up, out_reload)
    assert "waiting for `rumistack up`" in out_reload
    assert send(project.port, "/").headers.get("www-authenticate") == 'Basic realm="After up"'  # the last one's
    assert helpers(project) == []


def test_twenty_adduser_with_one_up_all_land_in_the_running_stack(project):
    rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n")
    up = start("up")
    wait_for_line(up, "checking the nginx configuration")
    adds = [start("adduser", f"user{n:02}", "--password-stdin", input=PASSWORD + "\n") for n in range(20)]
    results = [finish(p) for p in [up, *adds]]
    assert [code for code, _ in results] == [0] * 21, results
    assert all("Traceback" not in output for _, output in results)
    users = UserFile(Path(".rumistack/htpasswd"))
    assert len(users.names()) == 21
    # the running stack has the last user file: its generation is in the volume, behind the link
    assert staged(project) == []
    (nginx,) = project.client.containers.list(filters={"label": [f"{LABEL_PROJECT}={project.name}",
                                                                 "rumistack.service=nginx"]})
    code, link = nginx.exec_run(["readlink", f"{AUTH_DIR}/htpasswd"])
    assert link.decode().strip() == user_file_name(users.content())
    assert send(project.port, "/", headers={"Authorization": basic("user19", PASSWORD)}).status == 200


@pytest.mark.parametrize("command", ["up", "reload", "render"])
def test_a_command_killed_at_any_moment_is_cleaned_up_by_the_next(running_project, command, monkeypatch):
    project = running_project
    env = {}
    if command == "render":  # the bundle serves HTTPS
        env = {"RUMISTACK_TLS": "self-signed", "RUMISTACK_HTTPS_PORT": str(free_port())}
    rng = random.Random(f"{command}-17")
    outputs = []
    for n in range(6):
        # a new realm each time, so that each run has a new configuration to write
        realm = {"RUMISTACK_REALM": f"Realm {command} {n}"}
        process = start(command, env={**env, **realm})
        time.sleep(rng.uniform(0.3, 3.0))
        process.send_signal(signal.SIGTERM if n % 2 == 0 else signal.SIGKILL)
        code, output = finish(process, timeout=60)
        outputs.append(output)
        assert "Traceback" not in output, output
        assert code in (0, 128 + 15, -signal.SIGTERM, -signal.SIGKILL), (code, output)
    for name, value in {**env, "RUMISTACK_REALM": "Realm final"}.items():
        monkeypatch.setenv(name, value)
    left = len(helpers(project))
    result = rumistack(command)
    assert result.exit_code == 0, (result.output, outputs)
    assert result.output.count("a helper container a stopped command left") == left
    assert helpers(project) == []
    assert staged(project) == []
    if command != "render":  # render writes for compose: the running nginx does not take it on
        assert send(project.port, "/").headers.get("www-authenticate") == 'Basic realm="Realm final"'
    temporary = [p for p in Path(".rumistack").rglob(".*") if p.is_file()]
    assert temporary == []

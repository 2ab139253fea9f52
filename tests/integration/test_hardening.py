"""The stack's containers as `up` runs them: bounded logs, measured on the engine's disk; no new privileges
anywhere, nginx with four capabilities on a read-only root filesystem, the verifier with none, as a plain
user at a low priority, its socket volume shared with nginx only."""

from __future__ import annotations

from pathlib import Path

import pytest

from clirun import PASSWORD, rumistack
from web import basic, send

from rumistack.layout import NGINX_GID, VERIFIER_UID
from rumistack.spec import VERIFIER_VOLUME

MB = 1024 * 1024


def _up(monkeypatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    result = rumistack("up")
    assert result.exit_code == 0, result.output


def _log_bytes(container) -> int:
    """What the engine keeps of the container's log: the json-file and its rotated files."""
    container.reload()
    path = Path(container.attrs["LogPath"])
    return sum(f.stat().st_size for f in path.parent.iterdir() if f.name.startswith(path.name))


def test_50_mb_of_log_lines_stay_within_the_configured_bound(docker_client, project, monkeypatch):
    _up(monkeypatch, RUMISTACK_LOG_MAX_SIZE="1m")
    for service, container_id in project.container_ids().items():
        config = docker_client.containers.get(container_id).attrs["HostConfig"]["LogConfig"]
        assert config == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "3"}}, service
    rumitalk = docker_client.containers.get(project.container_ids()["rumitalk"])
    if not Path(rumitalk.attrs["LogPath"]).exists():
        pytest.skip("the engine's disk is not this machine's")
    # 50 MB of 100-byte lines on the main process's stdout, as a chatty or attacked service writes them
    code, output = rumitalk.exec_run(["sh", "-c", "yes \"$(printf '%099d' 0)\" | head -c 52428800 > /proc/1/fd/1"])
    assert code == 0, output
    rumitalk.exec_run(["sh", "-c", "echo the last line > /proc/1/fd/1"])
    kept = _log_bytes(rumitalk)
    # 3 files of 1 MB, each line stored as a JSON record (about twice its length) at most
    assert kept <= 3 * MB + 64 * 1024, kept
    logs = rumistack("logs", "rumitalk", "--tail", "5")
    assert logs.exit_code == 0 and "the last line" in logs.output  # the recent lines are still there
    assert send(project.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200


def test_every_container_is_hardened_and_nginx_runs_read_only_with_four_capabilities(docker_client, running_project):
    for service, container_id in running_project.container_ids().items():
        host = docker_client.containers.get(container_id).attrs["HostConfig"]
        assert host["SecurityOpt"] == ["no-new-privileges:true"], service
    nginx = docker_client.containers.get(running_project.container_ids()["nginx"])
    host = nginx.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == ["CHOWN", "NET_BIND_SERVICE", "SETGID", "SETUID"]
    assert host["ReadonlyRootfs"] is True
    # the root filesystem refuses writes, the tmpfs takes them; the workers run as nginx
    code, output = nginx.exec_run(["sh", "-c", "touch /etc/x 2>/dev/null; echo $?; touch /run/nginx/x && echo ok"])
    assert output.decode().split() == ["1", "ok"], output
    code, output = nginx.exec_run(["sh", "-c", "grep -h ^Uid: /proc/[0-9]*/status | sort -u"])
    assert "101" in output.decode()
    assert send(running_project.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200


def test_the_verifier_runs_as_a_plain_user_without_capabilities_at_a_low_priority(docker_client, running_project):
    ids = running_project.container_ids()
    verifier = docker_client.containers.get(ids["verifier"])
    host = verifier.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["ReadonlyRootfs"] is True
    assert verifier.attrs["Config"]["User"] == f"{VERIFIER_UID}:{NGINX_GID}"
    assert not host["PortBindings"]  # its metrics are on the stack's network only
    # bcrypt's threads yield the CPU to nginx: every thread of its process runs at nice 10
    code, output = verifier.exec_run(["sh", "-c", "cut -d ' ' -f 19 /proc/1/task/*/stat | sort -u"])
    assert output.decode().split() == ["10"], output
    # the socket volume is nginx's and the verifier's only: nothing else on the network can ask it directly
    socket_volume = f"{running_project.name}_{VERIFIER_VOLUME}"
    mounted = {service for service, container_id in ids.items()
               if any(m.get("Name") == socket_volume for m in docker_client.containers.get(container_id).attrs["Mounts"])}
    assert mounted == {"nginx", "verifier"}
    assert docker_client.volumes.get(socket_volume).attrs["Options"]["type"] == "tmpfs"

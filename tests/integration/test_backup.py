"""Backup and restore against real containers: a backup while a load loop runs, restored into a second
project (users, secrets, MongoDB's documents, uploads and images the same there); damaged archives and
existing data refused with nothing changed; the commands of docs/operations.md as written."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import tarfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from clirun import PASSWORD, Project, free_port, new_project_name, rumistack
from testenv import TEST_LABELS
from web import basic, send

from rumistack import backup
from rumistack.spec import LABEL_PROJECT

ROOT = Path(__file__).parents[2]
DOCUMENTS = [{"_id": f"conversation-{i}", "title": f"chat {i}", "text": "ünïcode " * i} for i in range(5)]
UPLOAD = os.urandom(300_000)
IMAGE = os.urandom(20_000)


def _container(project: Project, service: str):
    return project.client.containers.get(f"{project.name}-{service}")


def _seed(project: Project) -> None:
    """Documents in the stand-in MongoDB (through its own tool, so it stores them), a file in uploads and
    one in images (through RumiTalk's container, where it would write them)."""
    mongo = _container(project, "mongodb")
    for document in DOCUMENTS:
        code, output = mongo.exec_run(["mongo-stub", "insert", "RumiTalk", "conversations", json.dumps(document)])
        assert code == 0, output
    rumitalk = _container(project, "rumitalk")
    rumitalk.put_archive("/app/uploads", _tar({"user-1/report.pdf": UPLOAD}))
    rumitalk.put_archive("/app/client/public/images", _tar({"user-1/avatar.png": IMAGE}))


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid = len(data), 1000, 1000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _read(project: Project, service: str, path: str) -> bytes:
    stream, _ = _container(project, service).get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return tar.extractfile(tar.next()).read()


def _documents(project: Project) -> list[dict]:
    code, output = _container(project, "mongodb").exec_run(["mongo-stub", "find", "RumiTalk", "conversations"])
    assert code == 0, output
    return json.loads(output)


def _volume_sums(project: Project, image: str) -> dict[str, str]:
    """{volume: sha256sum of every file in it, with its path, owner and mode}: what a change would show."""
    found = sorted(v.name for v in project.client.volumes.list(filters={"label": f"{LABEL_PROJECT}={project.name}"}))
    mounts = [f"{name}:/v/{name}:ro" for name in found]
    script = 'cd /v && find . -exec stat -c "%n %u %g %a %s" {} + | sort && find . -type f -exec sha256sum {} + | sort'
    output = project.client.containers.run(image, ["sh", "-c", script], entrypoint=[], volumes=mounts,
                                           network_mode="none", remove=True, labels=TEST_LABELS)
    return {"volumes": output.decode(), "names": " ".join(found)}


def _state_sums(directory: Path) -> dict[str, bytes]:
    """The state directory's files but the lock's (which says who holds it)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.suffix != ".lock"}


@contextmanager
def _load_loop(port: int, limit: int = 20_000, seconds: float = 300):
    """Requests through nginx with alice's credentials, in a loop bounded in count and time, while the block
    runs; yields a dict that gets `ok` and `failed` (each failure's description)."""
    result: dict = {"ok": 0, "failed": []}
    done = threading.Event()
    alice = {"Authorization": basic("alice", PASSWORD)}

    def run() -> None:
        deadline = time.monotonic() + seconds
        while not done.is_set() and result["ok"] + len(result["failed"]) < limit and time.monotonic() < deadline:
            try:
                answer = send(port, "/api/user" if result["ok"] % 2 else "/", headers=alice)
                if answer.status in (200, 401) and (answer.status == 200 or answer.seen is not None):
                    result["ok"] += 1
                else:
                    result["failed"].append(f"status {answer.status}")
            except OSError as exc:
                result["failed"].append(repr(exc))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()


@contextmanager
def _second_project(monkeypatch, directory: Path, first: Project):
    """Another project in `directory` (its own state directory, name and port) while the block runs; then
    its objects go, and the first project's environment is back."""
    second = Project(new_project_name(), free_port(), first.client)
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.setenv("RUMISTACK_PROJECT", second.name)
    monkeypatch.setenv("RUMISTACK_HTTP_PORT", str(second.port))
    try:
        yield second
    finally:
        rumistack("down", "--volumes", "--yes")
        monkeypatch.chdir(directory.parent)
        monkeypatch.setenv("RUMISTACK_PROJECT", first.name)
        monkeypatch.setenv("RUMISTACK_HTTP_PORT", str(first.port))


def test_backup_under_load_restored_into_a_second_project(running_project, monkeypatch, tmp_path):
    first = running_project
    _seed(first)
    with _load_loop(first.port) as load:
        time.sleep(0.5)
        result = rumistack("backup", "b.tar")
        time.sleep(0.5)
    assert result.exit_code == 0, result.output
    assert load["failed"] == [] and load["ok"] >= 10, load
    archive = tmp_path / "b.tar"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert "Meilisearch's index is left out" in result.output
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))
    assert names[0] == "manifest.json" and names[-1] == "manifest.sha256"
    assert {"state/htpasswd", "state/secrets.env", "mongodb.archive", "volumes/rumitalk-uploads.tar",
            "volumes/rumitalk-images.tar"} <= set(manifest["members"])
    assert manifest["config"]["RUMISTACK_PROJECT"] == first.name
    secrets = (tmp_path / ".rumistack" / "secrets.env").read_bytes()
    # RumiTalk's secrets are in the state directory's part only, never in clear in the manifest
    for line in secrets.decode().splitlines():
        assert line.split("=", 1)[1].strip("'") not in json.dumps(manifest)

    with _second_project(monkeypatch, tmp_path / "second", first) as second:
        restored = rumistack("restore", str(archive))
        assert restored.exit_code == 0, restored.output
        assert "replaced" not in restored.output
        up = rumistack("up")
        assert up.exit_code == 0, up.output
        assert send(second.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200
        assert send(second.port, "/", headers={"Authorization": basic("alice", "wrong")}).status == 401
        assert rumistack("users").output.split() == ["alice"]
        assert (tmp_path / "second" / ".rumistack" / "secrets.env").read_bytes() == secrets
        assert _documents(second) == DOCUMENTS
        assert _read(second, "rumitalk", "/app/uploads/user-1/report.pdf") == UPLOAD
        assert _read(second, "rumitalk", "/app/client/public/images/user-1/avatar.png") == IMAGE
        # RumiTalk's stand-in signs logins with JWT_SECRET: a login there is the one from the same secret
        assert _container(second, "rumitalk").exec_run(["printenv", "JWT_SECRET"]).output == \
            _container(first, "rumitalk").exec_run(["printenv", "JWT_SECRET"]).output


def test_damaged_archives_and_existing_data_are_refused_changing_nothing(running_project, test_images, monkeypatch,
                                                                        tmp_path):
    project = running_project
    _seed(project)
    assert rumistack("backup", "b.tar").exit_code == 0
    assert rumistack("down").exit_code == 0
    # with the stack down, the dump comes from a helper MongoDB on the same volume
    down = rumistack("backup", "down.tar")
    assert down.exit_code == 0 and "starting a helper MongoDB" in down.output, down.output
    with tarfile.open(tmp_path / "down.tar") as tar:
        dump = tar.extractfile("mongodb.archive").read()
    assert json.loads(dump.split(b"\n", 1)[1])["RumiTalk"]["conversations"] == DOCUMENTS
    good = (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "b.tar") as tar:
        member = tar.getmember("volumes/rumitalk-uploads.tar")
    flipped = bytearray(good)
    flipped[member.offset_data + member.size // 2] ^= 0x01
    (tmp_path / "flipped.tar").write_bytes(bytes(flipped))
    (tmp_path / "truncated.tar").write_bytes(good[:len(good) * 2 // 3])
    manifest_flipped = bytearray(good)
    manifest_flipped[good.index(b'"RUMISTACK_PROJECT"') + 3] ^= 0x20
    (tmp_path / "manifest.tar").write_bytes(bytes(manifest_flipped))
    (tmp_path / "empty.tar").write_bytes(b"")

    volumes = _volume_sums(project, test_images["nginx"])
    state = _state_sums(tmp_path / ".rumistack")
    for name in ("flipped.tar", "truncated.tar", "manifest.tar", "empty.tar"):
        result = rumistack("restore", "--force", name)
        assert result.exit_code == 7, (name, result.output)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "nothing was changed" in errors[0] and result.stdout == "", result.output
    assert "damaged" in rumistack("restore", "flipped.tar").output

    refused = rumistack("restore", "b.tar")  # the volumes hold data
    assert refused.exit_code == 7 and "--force" in refused.output and "nothing was changed" in refused.output
    assert f"volume {project.name}_mongodb-data" in refused.output
    assert _volume_sums(project, test_images["nginx"]) == volumes
    assert _state_sums(tmp_path / ".rumistack") == state

    # the archive as it checked out, changed before its first file is applied
    with tarfile.open(tmp_path / "b.tar") as tar:
        first_file = next(m for m in tar if m.name.startswith("state/"))
    (tmp_path / "changing.tar").write_bytes(good)
    checked = backup._checked

    def check_then_change(archive, path, progress):
        manifest = checked(archive, path, progress)
        with open(path, "r+b") as writer:
            writer.seek(first_file.offset_data)
            writer.write(bytes([good[first_file.offset_data] ^ 0x01]))
        return manifest

    with monkeypatch.context() as patched:
        patched.setattr(backup, "_checked", check_then_change)
        changed = rumistack("restore", "--force", "changing.tar")
    assert changed.exit_code == 7 and "changed while it was restored" in changed.output, changed.output
    assert _state_sums(tmp_path / ".rumistack") == state

    forced = rumistack("restore", "--force", "b.tar")
    assert forced.exit_code == 0, forced.output
    assert f"replaced volume {project.name}_rumitalk-uploads" in forced.output
    assert rumistack("up").exit_code == 0
    assert _documents(project) == DOCUMENTS
    assert _read(project, "rumitalk", "/app/uploads/user-1/report.pdf") == UPLOAD


def test_restore_refuses_a_running_stack(running_project, tmp_path):
    assert rumistack("backup").exit_code == 0
    [written] = (tmp_path / ".rumistack" / "backups").iterdir()
    result = rumistack("restore", str(written))
    assert result.exit_code == 7 and "rumistack down" in result.output, result.output


def test_a_backup_with_nothing_to_back_up_is_refused_and_writes_nothing(running_project, monkeypatch, tmp_path):
    with _second_project(monkeypatch, tmp_path / "elsewhere", running_project):
        result = rumistack("backup", "b/b.tar")
        assert result.exit_code == 7 and "nothing to back up" in result.output, result.output
        # the state directory holds the project's lock only; the archive's directory was never made
        assert [p.name for p in (tmp_path / "elsewhere").iterdir()] == [".rumistack"]
        assert not (tmp_path / "elsewhere" / "b").exists()


def _docs_block(section: str) -> list[str]:
    """The command lines of the first code block of docs/operations.md's `section`."""
    page = (ROOT / "docs" / "operations.md").read_text()
    part = page.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```\n(.*?)^```", part, re.S | re.M)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_the_documented_backup_and_restore(running_project, tmp_path):
    """docs/operations.md's backup section, run as written (with this project's container name for
    `rumistack-nginx`, the name of the default project)."""
    project = running_project
    lines = _docs_block("backup and restore")
    assert lines[:4] == ["rumistack backup b.tar", "rumistack down --volumes --yes", "rumistack restore b.tar",
                         "rumistack up"], lines
    outputs = []
    for line in lines:
        words = line.replace("rumistack-nginx", f"{project.name}-nginx").split()
        if words[0] == "rumistack":
            result = rumistack(*words[1:])
            assert result.exit_code == 0, (line, result.output)
            outputs.append(result.output)
        else:
            outputs.append(subprocess.run(words, check=True, capture_output=True, text=True).stdout)
    assert send(project.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200
    assert outputs[lines.index("rumistack users")].split() == ["alice"]
    inspected = json.loads(outputs[-1])[0]["HostConfig"]
    assert inspected["ReadonlyRootfs"] is True and inspected["CapDrop"] == ["ALL"], inspected


def test_up_with_a_new_mongodb_image_writes_a_backup_then_recreates_mongodb_only(
        running_project, test_images, monkeypatch, tmp_path):
    project = running_project
    _seed(project)
    # another image id for the same stand-in: what a new MongoDB tag is to `up`
    newer, _ = project.client.images.build(
        fileobj=io.BytesIO(f"FROM {test_images['mongodb']}\nLABEL rumistack.upgrade=1\n".encode()),
        tag=f"rumistack-test/mongo-stub:upgrade-{TEST_LABELS['rumistack.test']}", labels=TEST_LABELS, rm=True)
    before = project.container_ids()
    monkeypatch.setenv("RUMISTACK_MONGO_IMAGE", newer.tags[0])
    result = rumistack("up")
    assert result.exit_code == 0, result.output
    [written] = (tmp_path / ".rumistack" / "backups").iterdir()
    assert f"backup before the upgrade written to {written.relative_to(tmp_path)}" in result.output
    after = project.container_ids()
    assert after["mongodb"] != before["mongodb"]
    assert {k: v for k, v in after.items() if k != "mongodb"} == {k: v for k, v in before.items() if k != "mongodb"}
    assert _container(project, "mongodb").image.id == newer.id
    assert _documents(project) == DOCUMENTS  # the volume stayed
    with tarfile.open(written) as tar:
        dump = tar.extractfile("mongodb.archive").read()
    assert json.loads(dump.split(b"\n", 1)[1])["RumiTalk"]["conversations"] == DOCUMENTS

    monkeypatch.setenv("RUMISTACK_MONGO_IMAGE", test_images["mongodb"])
    back = rumistack("up", "--no-backup")
    assert back.exit_code == 0, back.output
    assert len(list((tmp_path / ".rumistack" / "backups").iterdir())) == 1 and "backup" not in back.output

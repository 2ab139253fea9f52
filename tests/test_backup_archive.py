"""The backup archive without an engine: what goes in from the state directory, the manifest's config,
and verify's refusals of every kind of damage (a test per kind, each with nothing read further)."""

from __future__ import annotations

import hashlib
import json
import stat
import tarfile
from pathlib import Path

import pytest

from rumistack.backup import (
    FORMAT,
    MANIFEST,
    MANIFEST_SUM,
    _config_keys,
    _state_files,
    _write_archive,
    verify,
)
from rumistack.config import load_config
from rumistack.errors import BackupError
from rumistack.progress import Progress


def _config(tmp_path: Path, **extra: str):
    return load_config(tmp_path / "none.env", {"RUMISTACK_STATE_DIR": str(tmp_path / "state"),
                                               "RUMITALK_ENV_FILE": str(tmp_path / "rumitalk.env"),
                                               "RUMITALK_CONFIG_FILE": str(tmp_path / "rumitalk.yaml"), **extra})


def _archive(tmp_path: Path, members: dict[str, bytes], manifest_extra: dict | None = None) -> Path:
    parts = {}
    for name, data in members.items():
        source = tmp_path / "parts" / name
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        parts[name] = source
    manifest = json.dumps({"format": FORMAT, "members": {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in members.items()},
        **(manifest_extra or {})}).encode()
    path = tmp_path / "b.tar"
    _write_archive(path, manifest, parts, Progress())
    return path


def test_the_state_directory_goes_in_without_locks_temporary_files_and_backups(tmp_path):
    config = _config(tmp_path)
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True)
    (state / "backups").mkdir()
    for name in ("htpasswd", "secrets.env", "tls/self-signed.crt", "backups/old.tar", "p.lock", ".htpasswd.abcdefgh"):
        (state / name).write_text(name)
    (tmp_path / "rumitalk.env").write_text("OPENAI_API_KEY=x\n")
    assert [name for name, _ in _state_files(config)] == [
        "state/htpasswd", "state/secrets.env", "state/tls/self-signed.crt", "settings/rumitalk.env"]


def test_the_manifest_keeps_every_key_but_masks_a_database_password(tmp_path):
    keys = _config_keys(_config(tmp_path, RUMISTACK_MONGO_URI="mongodb://rumi:s3cret@db.example:27017/RumiTalk"))
    assert keys["RUMISTACK_MONGO_URI"] == "mongodb://rumi:***@db.example:27017/RumiTalk"
    assert "s3cret" not in json.dumps(keys)
    assert keys["RUMISTACK_SEARCH"] == "false" and keys["RUMISTACK_HTTP_PORT"] == "8080"


def test_a_good_archive_verifies_and_is_mode_0600(tmp_path):
    path = _archive(tmp_path, {"state/htpasswd": b"alice:$2y$...", "volumes/rumitalk-uploads.tar": b"x" * 5000})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(verify(path)["members"]) == {"state/htpasswd", "volumes/rumitalk-uploads.tar"}


@pytest.mark.parametrize("damage", ["flip data", "flip manifest", "truncate", "truncate in header", "empty",
                                    "no manifest sum", "not a tar"])
def test_damage_of_every_kind_is_refused(tmp_path, damage):
    path = _archive(tmp_path, {"state/htpasswd": b"alice:hash\n", "volumes/rumitalk-uploads.tar": b"u" * 20000})
    data = bytearray(path.read_bytes())
    if damage == "flip data":
        data[data.index(b"u" * 100) + 5000] ^= 1
    elif damage == "flip manifest":
        data[data.index(b'"format"') + 2] ^= 0x20
    elif damage == "truncate":
        data = data[:len(data) // 2]
    elif damage == "truncate in header":
        data = data[:data.index(b"u" * 100) - 100]
    elif damage == "empty":
        data = bytearray()
    elif damage == "no manifest sum":
        data = data[:data.index(MANIFEST_SUM.encode()) - 1]
    else:
        data = bytearray(b"PK\x03\x04 a zip file")
    path.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="nothing was changed"):
        verify(path)


def test_a_tar_that_is_not_a_backup_is_named_so(tmp_path):
    path = tmp_path / "other.tar"
    with tarfile.open(path, "w") as tar:
        tar.add(__file__, arcname="notes.txt")
    with pytest.raises(BackupError, match=f"not a rumistack backup .*{MANIFEST}"):
        verify(path)

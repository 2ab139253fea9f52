"""Backups: one archive with everything a restore needs, and a restore that checks all of it first.

The archive is a plain tar, mode 0600 (it holds password hashes and
RumiTalk's secrets). Its members, in this order:

- `manifest.json`: the format, rumistack's version, the project, the config
  keys (a password in RUMISTACK_MONGO_URI masked), notes on what is left
  out, and each other member's size and sha256;
- `state/...`: the state directory (users, RumiTalk's secrets, certificates,
  the compose bundle's environment files), without lock files and backups;
- `settings/rumitalk.env`, `settings/rumitalk.yaml`: RumiTalk's settings
  file and YAML, when they exist;
- `mongodb.archive`: `mongodump --archive` run in the MongoDB container (in a
  helper container of the same image and volume when the stack is down),
  unless RUMISTACK_MONGO_URI names an outside database;
- `volumes/<volume>.tar`: RumiTalk's uploads and images, and Meilisearch's
  index only when asked (it is rebuilt from MongoDB);
- `manifest.sha256`: the manifest's own checksum, last.

Backups read the volumes through read-only helper mounts and dump MongoDB
online, so the stack serves throughout. A restore reads the whole archive
and checks every checksum before it changes anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import docker
from docker.models.containers import Container

from . import __version__
from .config import KEYS, Config
from .errors import BackupError, StackError, doing
from .files import TEMPORARY, make_directory, replace_atomically, sync_directory
from .progress import Progress
from .secretstore import GENERATORS
from .spec import (
    IMAGES_VOLUME,
    LABEL_PROJECT,
    LABEL_SERVICE,
    MEILI_VOLUME,
    MONGO_VOLUME,
    UPLOADS_VOLUME,
    services,
)
from .stack import connect
from .volumes import EngineVolumes

FORMAT = "rumistack-backup 1"
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.sha256"
STATE = "state"
SETTINGS = "settings"
MONGO_MEMBER = "mongodb.archive"
MEILI_SERVICE = "meilisearch"
BACKUPS_DIR = "backups"  # in the state directory: where `up` puts the backup it makes before an upgrade
DATA_VOLUMES = (UPLOADS_VOLUME, IMAGES_VOLUME)
# inside the MongoDB container, during a restore only
_MONGO_DATA = "/data/db"
_MONGO_RESTORE_FILE = "/tmp/rumistack-restore.archive"
_CHUNK = 1 << 20


@dataclass
class Written:
    """What `backup` wrote: the archive and its members ({name: size})."""
    path: Path
    members: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Restored:
    """What `restore` did: the members it applied, what it replaced (with --force), the notes."""
    members: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_path(config: Config) -> Path:
    """<state dir>/backups/<project>-<UTC time>.tar"""
    return config.state_dir / BACKUPS_DIR / f"{config.project}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.tar"


def before_upgrade(config: Config, progress: Progress = Progress()) -> Callable[[tuple[str, ...]], None]:
    """What `up` calls (stack.up's `upgrading`) when a data service gets a new image: a backup into the
    state directory's backups folder, taken while the old containers still run, and a line saying where."""
    def write(upgraded: tuple[str, ...]) -> None:
        progress.step(f"a new image for {', '.join(upgraded)}: writing a backup first (--no-backup skips it)")
        written = backup(config, None, MEILI_SERVICE in upgraded, progress)
        progress.step(f"backup before the upgrade written to {written.path}; `rumistack restore` brings it back")
    return write


def member_name(volume: str) -> str:
    return f"volumes/{volume}.tar"


def backup(config: Config, path: Path | None = None, search_index: bool = False,
           progress: Progress = Progress()) -> Written:
    """Write one archive of the deployment to `path` (default: `default_path`), while the stack serves."""
    path = Path(path) if path is not None else default_path(config)
    client = connect()
    engine = EngineVolumes(client, config, progress)
    parts: dict[str, Path] = dict(_state_files(config))  # member name -> the file it is read from
    volumes = DATA_VOLUMES + ((MEILI_VOLUME,) if search_index else ())
    mongo_here = not config.mongo_uri and engine.exists(MONGO_VOLUME)
    if not parts and not mongo_here and not any(engine.exists(v) for v in volumes):
        # most likely run outside the deployment's directory: an empty archive would look like a backup
        raise BackupError(f"nothing to back up: no state files in {config.state_dir}, no RumiTalk settings "
                          f"and no volumes of project {config.project}; nothing was written. Run it in the "
                          "directory with the deployment's .env (or set RUMISTACK_STATE_DIR and RUMISTACK_PROJECT)")
    with doing(f"creating the directory of the backup {path}"):
        make_directory(path.parent, "the backup's directory", "the PATH argument")
    written = Written(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".rumistack-backup-") as work:
        if config.mongo_uri:
            written.notes.append("MongoDB is outside the stack (RUMISTACK_MONGO_URI), so its data is NOT in this "
                                 "backup: back it up where it runs (mongodump --archive)")
        elif mongo_here:
            parts[MONGO_MEMBER] = Path(work) / MONGO_MEMBER
            with open(parts[MONGO_MEMBER], "wb") as out, _mongo(client, config, engine, progress) as mongo:
                _dump(client, mongo, out, _reporter(progress, MONGO_MEMBER))
            _saved(progress, MONGO_MEMBER, parts[MONGO_MEMBER])
        if not search_index:
            written.notes.append("Meilisearch's index is left out (RumiTalk rebuilds it from MongoDB); "
                                 "--search-index includes it")
        for volume in volumes:
            if not engine.exists(volume):
                written.notes.append(f"volume {volume} does not exist, so it is not in this backup")
                continue
            name = member_name(volume)
            parts[name] = Path(work) / name
            parts[name].parent.mkdir(exist_ok=True)
            with open(parts[name], "wb") as out:
                engine.export(volume, out, _reporter(progress, name))
            _saved(progress, name, parts[name])
        sums = {}
        for name, source in parts.items():
            sums[name] = {"sha256": _sha256_file(source), "size": source.stat().st_size}
            written.members[name] = sums[name]["size"]
        manifest = json.dumps({
            "format": FORMAT, "rumistack": __version__, "project": config.project,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": _config_keys(config), "notes": written.notes, "members": sums,
        }, indent=2, sort_keys=True).encode()
        _write_archive(path, manifest, parts, progress)
    progress.step(f"wrote {path} ({_size(path.stat().st_size)})")
    return written


def restore(config: Config, path: Path, force: bool = False, progress: Progress = Progress()) -> Restored:
    """Bring back what `backup` wrote into this project: checks the whole archive first and changes nothing
    when anything is wrong; refuses to replace existing data unless `force`. The stack must be down."""
    path = Path(path)
    with _opened(path) as archive:
        return _restore(config, path, archive, force, progress)


def _restore(config: Config, path: Path, archive: IO[bytes], force: bool, progress: Progress) -> Restored:
    # one open file throughout: what was checked is what is applied, and each member is checked again as
    # it is applied, so an archive changed in between is caught (before its member is written, for files)
    manifest = _checked(archive, path, progress)
    members = manifest["members"]
    client = connect()
    running = [c.labels.get(LABEL_SERVICE, c.name) for c in client.containers.list(
        filters={"label": [f"{LABEL_PROJECT}={config.project}", LABEL_SERVICE]})]
    if running:
        raise BackupError(f"the stack of project {config.project} runs ({', '.join(sorted(running))}): take it "
                          "down first (`rumistack down`), then restore, then `rumistack up`")
    engine = EngineVolumes(client, config, progress)
    files = _targets(config, members)
    volumes = {name: name.removeprefix("volumes/").removesuffix(".tar") for name in members
               if name.startswith("volumes/")}
    unknown = sorted(set(volumes.values()) - set(DATA_VOLUMES + (MEILI_VOLUME,)))
    if unknown:
        raise BackupError(f"the backup holds volumes rumistack never backs up ({', '.join(unknown)}): nothing was "
                          "changed")
    result = Restored()
    mongo_wanted = MONGO_MEMBER in members and not config.mongo_uri
    if MONGO_MEMBER in members and config.mongo_uri:
        result.notes.append(f"the archive holds a MongoDB dump ({MONGO_MEMBER}), but RUMISTACK_MONGO_URI names "
                            "an outside database: restore it there with `mongorestore --archive` (extract it with "
                            f"`tar -xf {path} {MONGO_MEMBER}`)")
    conflicts = [f"{target} (differs from the backup's)" for name, target in files.items()
                 if target.exists() and _sha256_file(target) != members[name]["sha256"]]
    data_volumes = tuple(volumes.values()) + ((MONGO_VOLUME,) if mongo_wanted else ())
    conflicts += [f"volume {engine.docker_name(v)} (holds data)" for v in engine.non_empty(data_volumes)]
    if conflicts and not force:
        raise BackupError(f"restoring would replace {', '.join(conflicts)}: nothing was changed; restore into a "
                          "new directory or project, run `rumistack down --volumes` first, or pass --force to "
                          "replace them")
    result.replaced = conflicts
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        for member in tar:
            name = member.name
            expected = members.get(name, {}).get("sha256")
            if name in files:
                target = files[name]
                data = _read(tar, member)
                _unchanged(path, name, hashlib.sha256(data).hexdigest(), expected)
                with doing(f"writing {target}"):
                    make_directory(target.parent, "a directory of the state directory")
                    replace_atomically(target, data, mode=member.mode & 0o777)
            elif name in volumes:
                volume = volumes[name]
                progress.step(f"restoring volume {engine.docker_name(volume)} ({_size(member.size)})")
                if engine.exists(volume):
                    engine.empty(volume)
                stream = _Digesting(tar.extractfile(member))
                engine.import_archive(volume, stream)
                _unchanged(path, name, stream.hexdigest(), expected, f"volume {engine.docker_name(volume)}")
            elif name == MONGO_MEMBER and mongo_wanted:
                progress.step(f"restoring MongoDB ({_size(member.size)})")
                if engine.exists(MONGO_VOLUME):
                    engine.empty(MONGO_VOLUME)
                with _mongo(client, config, engine, progress) as mongo:
                    _mongorestore(client, mongo, member, tar.extractfile(member),
                                  lambda digest: _unchanged(path, name, digest, expected))
            else:
                continue
            result.members.append(name)
    result.notes += manifest.get("notes", [])
    return result


def verify(path: Path, progress: Progress = Progress()) -> dict:
    """The archive's manifest, once every member's checksum matched; a BackupError (nothing read further)
    when the archive is damaged, truncated or not a rumistack backup."""
    with _opened(path) as archive:
        return _checked(archive, path, progress)


@contextmanager
def _opened(path: Path) -> Iterator[IO[bytes]]:
    with doing(f"reading the backup {path}"):
        archive = open(path, "rb")
    with archive:
        yield archive


def _checked(archive: IO[bytes], path: Path, progress: Progress) -> dict:
    def damaged(why: str) -> BackupError:
        return BackupError(f"{path} is damaged ({why}): nothing was changed; use another copy of the backup")

    with doing(f"reading the backup {path}"):
        try:
            with tarfile.open(fileobj=archive, mode="r:") as tar:
                first = tar.next()
                if first is None or first.name != MANIFEST or not first.isfile():
                    raise BackupError(f"{path} is not a rumistack backup (it does not start with {MANIFEST}): "
                                      "nothing was changed")
                raw = _read(tar, first)
                manifest = json.loads(raw)
                if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                    raise damaged(f"its manifest does not say {FORMAT!r}")
                expected = manifest.get("members")
                if not isinstance(expected, dict):
                    raise damaged("its manifest lists no members")
                seen: dict[str, str] = {}
                manifest_sum = None
                while (member := tar.next()) is not None:
                    if member.name == MANIFEST_SUM:
                        manifest_sum = _read(tar, member).decode().strip()
                        continue
                    if member.name not in expected or member.name in seen or not member.isfile():
                        raise damaged(f"an unexpected member {member.name}")
                    progress.step(f"checking {member.name} ({_size(member.size)})")
                    seen[member.name] = _sha256_stream(tar.extractfile(member))
        except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
            raise damaged(" ".join(str(exc).split()) or exc.__class__.__name__) from None
    if manifest_sum != hashlib.sha256(raw).hexdigest():
        raise damaged("its manifest does not match its checksum" if manifest_sum else "it ends early")
    missing = sorted(set(expected) - set(seen))
    if missing:
        raise damaged(f"it ends early: {', '.join(missing)} missing")
    wrong = sorted(name for name, digest in seen.items() if expected[name].get("sha256") != digest)
    if wrong:
        raise damaged(f"the checksum of {', '.join(wrong)} does not match")
    return manifest


def _targets(config: Config, members: dict) -> dict[str, Path]:
    """{member: the file it restores to} for the state directory's and the settings' members."""
    targets = {}
    for name in members:
        if name.startswith(f"{STATE}/"):
            relative = Path(name.removeprefix(f"{STATE}/"))
            if relative.is_absolute() or ".." in relative.parts:
                raise BackupError(f"the backup names a file outside the state directory ({name}): nothing was "
                                  "changed")
            targets[name] = config.state_dir / relative
    settings = {f"{SETTINGS}/rumitalk.env": config.rumitalk_env_file,
                f"{SETTINGS}/rumitalk.yaml": config.rumitalk_config_file}
    targets.update({name: target for name, target in settings.items() if name in members})
    return targets


def _state_files(config: Config) -> Iterator[tuple[str, Path]]:
    """(member name, file) for the state directory's files and RumiTalk's settings."""
    root = config.state_dir
    if root.is_dir():
        for directory, subdirs, names in os.walk(root):
            here = Path(directory)
            if here == root:
                subdirs[:] = [d for d in subdirs if d != BACKUPS_DIR]
            subdirs.sort()
            for name in sorted(names):
                file = here / name
                if name.endswith(".lock") or TEMPORARY.fullmatch(name) or not file.is_file() or file.is_symlink():
                    continue
                yield f"{STATE}/{file.relative_to(root).as_posix()}", file
    for name, source in (("rumitalk.env", config.rumitalk_env_file), ("rumitalk.yaml", config.rumitalk_config_file)):
        if source.is_file():
            yield f"{SETTINGS}/{name}", source


def _config_keys(config: Config) -> dict[str, str]:
    """Every key's value as .env would spell it; a password in RUMISTACK_MONGO_URI masked."""
    keys = {}
    for key in KEYS:
        value = getattr(config, key.field)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, tuple):
            text = ",".join(getattr(item, "path", str(item)) for item in value)
        else:
            text = "" if value is None else str(value)
        keys[key.name] = text
    keys["RUMISTACK_MONGO_URI"] = _masked(config.mongo_uri)
    return keys


def _masked(uri: str) -> str:
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@contextmanager
def _mongo(client: docker.DockerClient, config: Config, engine: EngineVolumes, progress: Progress) -> Iterator[Container]:
    """The project's running MongoDB container; when there is none, a helper of the same image with the
    project's data volume, ready when the service's own health check passes, removed afterwards."""
    found = client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={config.project}",
                                                                f"{LABEL_SERVICE}=mongodb"]})
    if found and found[0].status == "running":
        yield found[0]
        return
    # the service's definition only, for its image and health check: no secret is needed or read
    service = next(s for s in services(config, dict.fromkeys(GENERATORS, "")) if s.name == "mongodb")
    # a stopped container's image wrote the data (before an upgrade, the configured image is the new one)
    image = found[0].attrs["Image"] if found else service.image
    progress.step(f"starting a helper MongoDB on volume {engine.docker_name(MONGO_VOLUME)}")
    helper = engine.service(image, {MONGO_VOLUME: _MONGO_DATA})
    try:
        check = [part for part in service.healthcheck.test if part != "CMD"]
        deadline = time.monotonic() + config.health_timeout
        while helper.exec_run(check).exit_code != 0:
            helper.reload()
            if helper.status != "running" or time.monotonic() > deadline:
                raise StackError(f"the helper MongoDB did not get ready; its last log lines:\n"
                                 f"{helper.logs(tail=20).decode(errors='replace').rstrip()}")
            time.sleep(0.5)
        yield helper
    finally:
        helper.stop(timeout=30)
        helper.remove(force=True, v=True)  # and the anonymous volumes of the image's other VOLUMEs


def _dump(client: docker.DockerClient, mongo: Container, out: IO[bytes], report: Callable[[int], None]) -> None:
    """`mongodump --archive` in `mongo`, its standard output into `out`."""
    exec_id = client.api.exec_create(mongo.id, ["mongodump", "--archive"], stdout=True, stderr=True)["Id"]
    errors = b""
    done = 0
    for stdout, stderr in client.api.exec_start(exec_id, stream=True, demux=True):
        if stdout:
            out.write(stdout)
            done += len(stdout)
            report(done)
        if stderr:
            errors = (errors + stderr)[-4000:]
    code = client.api.exec_inspect(exec_id)["ExitCode"]
    if code != 0:
        raise BackupError(f"mongodump failed in {mongo.name} (exit code {code}): "
                          f"{errors.decode(errors='replace').strip()[-500:]}; nothing was written")


def _mongorestore(client: docker.DockerClient, mongo: Container, member: tarfile.TarInfo, data: IO[bytes],
                  check: Callable[[str], None]) -> None:
    """`mongorestore --archive=FILE` in `mongo`, the dump put in as FILE first and `check`ed (its sha256)
    before MongoDB reads it."""
    info = tarfile.TarInfo(_MONGO_RESTORE_FILE.lstrip("/"))
    info.size, info.mode = member.size, 0o600
    stream = _Digesting(data)
    try:
        if not mongo.put_archive("/", _tar_stream(info, stream)):
            raise BackupError(f"the Docker engine refused the MongoDB dump for {mongo.name}")
        check(stream.hexdigest())
        code, output = mongo.exec_run(["mongorestore", f"--archive={_MONGO_RESTORE_FILE}"])
    finally:
        mongo.exec_run(["rm", "-f", _MONGO_RESTORE_FILE])
    if code != 0:
        raise BackupError(f"mongorestore failed in {mongo.name} (exit code {code}): "
                          f"{output.decode(errors='replace').strip()[-500:]}")


def _unchanged(path: Path, name: str, digest: str, expected: str | None, written: str | None = None) -> None:
    """A BackupError when a member applied no longer has the checksum it had when the archive was checked."""
    if digest != expected:
        partly = f"; {written} may be incomplete" if written else ""
        raise BackupError(f"{path} changed while it was restored ({name} no longer matches its checksum){partly}: "
                          "restore again from a copy nothing writes to, with --force")


class _Digesting:
    """A member's data as it is read, keeping its sha256: the engine reads volumes straight from the archive."""

    def __init__(self, data: IO[bytes] | None) -> None:
        if data is None:
            raise BackupError("a member of the backup is not a file")
        self.data, self.digest = data, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.data.read(size)
        self.digest.update(chunk)
        return chunk

    # for the HTTP client, which measures the body's length without reading it
    def tell(self) -> int:
        return self.data.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.data.seek(offset, whence)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _tar_stream(info: tarfile.TarInfo, data: IO[bytes]) -> Iterator[bytes]:
    """A tar of one file, produced as it is read: a dump need not fit in memory."""
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    while chunk := data.read(_CHUNK):
        yield chunk
    yield b"\0" * (-info.size % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


def _write_archive(path: Path, manifest: bytes, parts: dict[str, Path], progress: Progress) -> None:
    """The archive beside `path`, mode 0600 from its creation, then renamed into place: an interrupted
    backup never leaves a partial archive under the name asked for."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, manifest)
            for name, source in parts.items():
                info = tarfile.TarInfo(name)
                stat = source.stat()
                info.size, info.mode, info.mtime = stat.st_size, stat.st_mode & 0o777, int(stat.st_mtime)
                with open(source, "rb") as data:
                    tar.addfile(info, data)
            _add(tar, MANIFEST_SUM, hashlib.sha256(manifest).hexdigest().encode() + b"\n")
            tar.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = tar.extractfile(member)
    if extracted is None:
        raise BackupError(f"{member.name} in the backup is not a file")
    return extracted.read()


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as data:
        return _sha256_stream(data)


def _sha256_stream(data: IO[bytes] | None) -> str:
    digest = hashlib.sha256()
    while data is not None and (chunk := data.read(_CHUNK)):
        digest.update(chunk)
    return digest.hexdigest()


def _reporter(progress: Progress, name: str) -> Callable[[int], None]:
    progress.step(f"saving {name}")
    return lambda done: progress.transfer(name, done)


def _saved(progress: Progress, name: str, path: Path) -> None:
    progress.step(f"saved {name} ({_size(path.stat().st_size)})")


def _size(count: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return str(count)

"""The stack's named volumes: what rumistack writes into them (File,
archive), the protocol every way of reaching them follows (Volumes), and
the way through the Docker engine (EngineVolumes), with short-lived helper
containers of the nginx image (no extra image: it is pulled only if
missing, as `up` needs it anyway). The compose bundle's tools container has
them mounted instead (mounted.MountedVolumes).

Writes are atomic: files are staged inside the volume, then renamed into
place, so nginx never reads a half-written file.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import os
import re
import secrets
import socket
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import docker
from docker.errors import NotFound
from docker.models.containers import Container
from docker.types import Mount

from .config import Config
from .errors import StackError
from .layout import (
    AUTH_TMPFS,
    AUTH_TMPFS_OPTIONS,
    CONF_DIR,
    NGINX_RUN_DIR,
    NGINX_RUN_OPTIONS,
    NGINX_TEST,
    UPSTREAM_HOST,
    USER_FILE,
)
from .progress import Progress
from .pull import image_id
from .spec import LABEL_PROJECT, VOLUME_OPTIONS, volume_labels, volume_name

_STAGE = "/rumistack-stage"
_EXPORT_DIR = "volume"  # where export and import_archive mount a volume: the top directory of its tar
ROLE = "rumistack.role"  # "helper" on helper containers
_CREATOR_PID, _CREATOR_HOST = "rumistack.pid", "rumistack.host"  # the process that made a helper
_STALE_AFTER = 600  # seconds: a helper of a process that cannot be judged from here (another host) is gone by then


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


class Volumes(Protocol):
    """The stack's volumes, by their name in spec.py ("nginx-config", ...)."""

    def exists(self, volume: str) -> bool: ...

    def check(self, files: dict[str, str], others: dict[str, File], test: tuple[str, ...] = NGINX_TEST) -> None:
        """Raise StackError when nginx refuses the config files, with `others` (absolute paths: the
        certificate) in place; `test`: the check's command line (the edge's, layout.EDGE_TEST, on a swarm)."""

    def read(self, wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, bytes]]:
        """{volume: {path: content}}: the files of `wanted` ({volume: paths}) that exist."""

    def nginx_version(self) -> tuple[int, int, int] | None:
        """The version of the nginx that runs the config, None if it cannot be known here."""

    def write(self, volumes: dict[str, dict[str, File]]) -> None:
        """{volume: {path in the volume: File}}; each file replaced atomically."""

    def sweep(self) -> int:
        """Remove what a killed command left (helper containers, staged or temporary files); run under the
        project lock."""

    def publish_user_file(self, volume: str, file: File) -> None:
        """`file` as the volume's user file: written as htpasswd-<hash of its content>, then the link
        htpasswd switched to it in one rename. nginx resolves the link on every request and keys its
        cache of verified credentials by the file it points to, so once this returns no earlier
        verification counts. The previous file stays (a verification in flight may be reading it);
        older ones go."""


def archive(files: dict[str, File], prefix: str = "", links: dict[str, str] | None = None) -> bytes:
    """A tar of `files` and symbolic `links` ({name: target}) under the
    directory `prefix`, with every parent directory."""
    paths = {f"{prefix}/{name}".strip("/"): file for name, file in files.items()}
    dirs = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, file in sorted(paths.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid = len(file.data), file.mode, file.uid, file.gid
            tar.addfile(info, io.BytesIO(file.data))
        for name, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(f"{prefix}/{name}".strip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def user_file_name(data: bytes) -> str:
    """The name of a user file's generation: its content's hash, so equal content means an equal name."""
    return f"{USER_FILE}-{hashlib.sha256(data).hexdigest()[:16]}"


def config_refused(output: str) -> StackError:
    return StackError(f"nginx refused the rendered configuration, so nothing was changed: {output}")


class EngineVolumes:
    """The project's named volumes ({volume}: `<project>_{volume}`), reached through the Docker engine
    with helper containers of the nginx image, which is pulled (with `progress`) when first needed."""

    def __init__(self, client: docker.DockerClient, config: Config, progress: Progress = Progress()) -> None:
        self._client = client
        self._config = config
        self._progress = progress
        self._image: str | None = None

    def docker_name(self, volume: str) -> str:
        """The volume's name on the engine."""
        return volume_name(self._config, volume)

    def exists(self, volume: str) -> bool:
        try:
            self._client.volumes.get(self.docker_name(volume))
        except NotFound:
            return False
        return True

    def ensure(self, volume: str) -> None:
        """Create the volume (with rumistack's and compose's labels) unless it is there."""
        if not self.exists(volume):
            self._client.volumes.create(self.docker_name(volume), driver="local",
                                        driver_opts=VOLUME_OPTIONS.get(volume),
                                        labels=volume_labels(self._config.project, volume))

    def check(self, files: dict[str, str], others: dict[str, File], test: tuple[str, ...] = NGINX_TEST) -> None:
        """Run `nginx -t` on the rendered files inside the nginx image."""
        config_archive = archive({name: File(text.encode()) for name, text in files.items()}, prefix=CONF_DIR)
        others_archive = archive({path.lstrip("/"): file for path, file in others.items()})
        code, output = self._helper(
            list(test), archives=[("/", config_archive), ("/", others_archive)],
            # the upstream name resolves on the stack's network; here any address will do
            extra_hosts={UPSTREAM_HOST: "127.0.0.1"},
            # nginx -t creates the cache and temporary directories and opens the pid file, on the tmpfs nginx has
            tmpfs={AUTH_TMPFS: AUTH_TMPFS_OPTIONS, NGINX_RUN_DIR: NGINX_RUN_OPTIONS},
        )
        if code != 0:
            raise config_refused(output)

    def read(self, wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, bytes]]:
        """A helper container is created, never started, and read with get_archive. A volume that does
        not exist is not created."""
        where = {volume: f"/volumes/{index}" for index, volume in enumerate(sorted(wanted)) if self.exists(volume)}
        found: dict[str, dict[str, bytes]] = {volume: {} for volume in where}
        if not where:
            return found
        mounts = [Mount(target, self.docker_name(volume), type="volume", read_only=True, no_copy=True)
                  for volume, target in where.items()]
        container = self._create(["true"], mounts=mounts)
        try:
            for volume, target in where.items():
                for path in wanted[volume]:
                    try:
                        stream, _ = container.get_archive(f"{target}/{path}")
                    except NotFound:
                        continue
                    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                        member = tar.next()
                        extracted = tar.extractfile(member) if member is not None else None
                        if extracted is not None:
                            found[volume][path] = extracted.read()
        finally:
            container.remove(force=True)
        return found

    def nginx_version(self) -> tuple[int, int, int] | None:
        """From `nginx -v` in the image; None if it does not say."""
        _, output = self._helper(["nginx", "-v"])
        match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", output)
        return (int(match[1]), int(match[2]), int(match[3])) if match else None

    def write(self, volumes: dict[str, dict[str, File]]) -> None:
        stage = f"{_STAGE}-{secrets.token_hex(4)}"
        mounts, archives, moves = [], [], []
        for index, (volume, files) in enumerate(sorted(volumes.items())):
            self.ensure(volume)
            target = f"/volumes/{index}"
            mounts.append(Mount(target, self.docker_name(volume), type="volume", no_copy=True))
            archives.append((target, archive(files, prefix=stage)))
            for path in sorted(files):
                moves += [f"{target}{stage}/{path}", f"{target}/{path}"]
        script = (
            'set -e; while [ $# -gt 0 ]; do mkdir -p "$(dirname "$2")"; mv -f "$1" "$2"; shift 2; done; '
            f"rm -rf /volumes/*{_STAGE}-*"  # ours, and any a killed command left (the project lock is held)
        )
        code, output = self._helper(["sh", "-c", script, "sh", *moves], archives=archives, mounts=mounts)
        if code != 0:
            raise StackError(f"writing into the volumes failed: {output}")

    def publish_user_file(self, volume: str, file: File) -> None:
        self.ensure(volume)
        name = user_file_name(file.data)
        stage = f"{_STAGE}-{secrets.token_hex(4)}"
        target = "/volume"
        # $1 the volume, $2 the staging directory, $3 the new file, $4 the link
        script = (
            'set -e; cd "$1"; mv -f "$2/$3" "$3"; previous="$(readlink "$4" || true)"; mv -f "$2/$4" "$4"; '
            'for f in "$4"-*; do [ "$f" = "$3" ] || [ "$f" = "$previous" ] || rm -f "$f"; done; '
            f'rm -rf "$2" ./{_STAGE.lstrip("/")}-*'  # ours, and any a killed command left
        )
        code, output = self._helper(
            ["sh", "-c", script, "sh", target, stage.lstrip("/"), name, USER_FILE],
            archives=[(target, archive({name: file}, prefix=stage, links={USER_FILE: name}))],
            mounts=[Mount(target, self.docker_name(volume), type="volume", no_copy=True)],
        )
        if code != 0:
            raise StackError(f"writing the user file into its volume failed: {output}")

    def export(self, volume: str, out: BinaryIO, report: Callable[[int], None] = lambda done: None) -> None:
        """Write the whole volume to `out` as a tar (its entries under `volume/`), read from a helper that
        mounts it read-only, so it works while the stack serves; `report` gets the bytes written so far."""
        container = self._create(["true"], mounts=[
            Mount(f"/{_EXPORT_DIR}", self.docker_name(volume), type="volume", read_only=True, no_copy=True)])
        try:
            stream, _ = container.get_archive(f"/{_EXPORT_DIR}")
            done = 0
            for chunk in stream:
                out.write(chunk)
                done += len(chunk)
                report(done)
        finally:
            container.remove(force=True)

    def import_archive(self, volume: str, data: BinaryIO) -> None:
        """Extract a tar that `export` wrote into the volume (created if missing), owners and modes kept."""
        self.ensure(volume)
        container = self._create(["true"], mounts=[
            Mount(f"/{_EXPORT_DIR}", self.docker_name(volume), type="volume", no_copy=True)])
        try:
            if not container.put_archive("/", data):
                raise StackError(f"the Docker engine refused the archive of volume {volume}")
        finally:
            container.remove(force=True)

    def non_empty(self, volumes: tuple[str, ...]) -> list[str]:
        """Those of `volumes` that exist and hold any file."""
        where = {f"/volumes/{i}": v for i, v in enumerate(volumes) if self.exists(v)}
        if not where:
            return []
        script = 'for d in "$@"; do [ -z "$(ls -A "$d")" ] || echo "$d"; done'
        code, output = self._helper(["sh", "-c", script, "sh", *where], mounts=[
            Mount(target, self.docker_name(v), type="volume", read_only=True, no_copy=True)
            for target, v in where.items()])
        if code != 0:
            raise StackError(f"reading the volumes failed: {output}")
        return [where[line] for line in output.split() if line in where]

    def empty(self, volume: str) -> None:
        """Remove every file in the volume."""
        code, output = self._helper(["find", "/volume", "-mindepth", "1", "-delete"], mounts=[
            Mount("/volume", self.docker_name(volume), type="volume", no_copy=True)])
        if code != 0:
            raise StackError(f"emptying volume {volume} failed: {output}")

    def service(self, image: str, mounts: dict[str, str]) -> Container:
        """A started helper of a service's `image` running its own command, with the volumes `mounts`
        ({volume: target}) and no network: a database a backup or restore talks to when the stack is down.
        The caller removes it."""
        for volume in mounts:
            self.ensure(volume)
        container = self._create(None, image=image, mounts=[
            Mount(target, self.docker_name(v), type="volume", no_copy=True) for v, target in mounts.items()])
        container.start()
        return container

    def _create(self, command: list[str] | None, image: str | None = None, **kwargs) -> Container:
        """A helper container, not started, with no network: of the nginx image running `command` (its
        entrypoint off), or of `image` with its own entrypoint and, without `command`, its own command."""
        if image is not None:
            chosen, extra = image_id(self._client, image, self._progress), {}
        else:
            if self._image is None:
                self._image = image_id(self._client, self._config.nginx_image, self._progress)
            chosen, extra = self._image, {"entrypoint": []}
        return self._client.containers.create(
            chosen, command=command, network_mode="none",
            labels={LABEL_PROJECT: self._config.project, ROLE: "helper",
                    _CREATOR_PID: str(os.getpid()), _CREATOR_HOST: socket.gethostname()}, **extra, **kwargs)

    def sweep(self) -> int:
        """Remove what killed commands left: their helper containers, and the files they staged in the
        volumes. Run under the project lock. Returns how many helpers went."""
        project = f"{LABEL_PROJECT}={self._config.project}"
        left = [c for c in self._client.containers.list(all=True, filters={"label": [project, f"{ROLE}=helper"]})
                if _abandoned(c)]
        for container in left:
            self._progress.step(f"removing {container.name}, a helper container a stopped command left")
            try:
                container.remove(force=True)
            except NotFound:
                pass
        if left:
            found = self._client.volumes.list(filters={"label": project})
            mounts = [Mount(f"/volumes/{i}", v.name, type="volume", no_copy=True) for i, v in enumerate(found)]
            if mounts:
                code, output = self._helper(["sh", "-c", f"rm -rf /volumes/*{_STAGE}-*"], mounts=mounts)
                if code != 0:
                    raise StackError(f"removing files a stopped command staged in the volumes failed: {output}")
        return len(left)

    def _helper(self, command: list[str], archives=(), **kwargs) -> tuple[int, str]:
        """Run a helper container with `archives` put in first; return (exit code, output)."""
        container = self._create(command, **kwargs)
        try:
            for path, data in archives:
                container.put_archive(path, data)
            container.start()
            code = container.wait(timeout=60)["StatusCode"]
            return code, container.logs().decode(errors="replace").strip()
        finally:
            container.remove(force=True)


def _abandoned(container) -> bool:
    """A helper whose command is gone: its process is not running here, or (made elsewhere) it is old."""
    labels = container.labels
    if labels.get(_CREATOR_HOST) == socket.gethostname() and labels.get(_CREATOR_PID, "").isdigit():
        pid = int(labels[_CREATOR_PID])
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    created = container.attrs.get("Created", "")
    try:
        made = calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return True
    return time.time() - made > _STALE_AFTER

"""Files into named volumes and config checks, through short-lived helper
containers of the nginx image (no extra image: it is pulled only if missing,
as `up` needs it anyway).

Writes are atomic: files are staged inside the volume, then renamed into
place, so nginx never reads a half-written file.
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

import docker
from docker.errors import NotFound
from docker.types import Mount

from .config import Config
from .errors import StackError
from .render import CONF_DIR, MAIN_FILE, UPSTREAM, USER_FILE
from .spec import AUTH_TMPFS_MOUNT, LABEL_PROJECT, volume_labels, volume_name

_STAGE = "/rumistack-stage"


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


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


def _run_helper(client: docker.DockerClient, image: str, project: str, command: list[str], archives=(), **kwargs) -> tuple[int, str]:
    """Create a helper container, put `archives` in, run it, return (exit code, output)."""
    container = client.containers.create(
        image, command=command, entrypoint=[], labels={LABEL_PROJECT: project, "rumistack.role": "helper"},
        network_mode="none", **kwargs,
    )
    try:
        for path, data in archives:
            container.put_archive(path, data)
        container.start()
        code = container.wait(timeout=60)["StatusCode"]
        return code, container.logs().decode(errors="replace").strip()
    finally:
        container.remove(force=True)


def check_config(client: docker.DockerClient, image: str, project: str, files: dict[str, str],
                 others: dict[str, File] | None = None) -> None:
    """Run `nginx -t` on the rendered files inside the nginx image, with `others` (absolute paths: the
    certificate) in place; raise StackError if it refuses them."""
    config_archive = archive({name: File(text.encode()) for name, text in files.items()}, prefix=CONF_DIR)
    others_archive = archive({path.lstrip("/"): file for path, file in (others or {}).items()})
    host = UPSTREAM.split(":")[0]
    code, output = _run_helper(
        client, image, project, ["nginx", "-t", "-q", "-c", f"{CONF_DIR}/{MAIN_FILE}"],
        archives=[("/", config_archive), ("/", others_archive)],
        # the upstream name resolves on the stack's network; here any address will do
        extra_hosts={host: "127.0.0.1"},
        # nginx -t creates the cache directory, which needs the tmpfs nginx has
        tmpfs={AUTH_TMPFS_MOUNT.target: AUTH_TMPFS_MOUNT.options},
    )
    if code != 0:
        raise config_refused(output)


def config_refused(output: str) -> StackError:
    return StackError(f"nginx refused the rendered configuration, so nothing was changed: {output}")


def write_files(client: docker.DockerClient, image: str, project: str, volumes: dict[str, dict[str, File]]) -> None:
    """Write files into named volumes: {volume name: {path in volume: File}}, each file replaced atomically."""
    stage = f"{_STAGE}-{secrets.token_hex(4)}"
    mounts, archives, moves = [], [], []
    for index, (volume, files) in enumerate(sorted(volumes.items())):
        target = f"/volumes/{index}"
        mounts.append(Mount(target, volume, type="volume", no_copy=True))
        archives.append((target, archive(files, prefix=stage)))
        for path in sorted(files):
            moves += [f"{target}{stage}/{path}", f"{target}/{path}"]
    script = (
        'set -e; while [ $# -gt 0 ]; do mkdir -p "$(dirname "$2")"; mv -f "$1" "$2"; shift 2; done; '
        f"rm -rf /volumes/*{stage}"
    )
    code, output = _run_helper(client, image, project, ["sh", "-c", script, "sh", *moves], archives=archives, mounts=mounts)
    if code != 0:
        raise StackError(f"writing into the volumes failed: {output}")


def user_file_name(data: bytes) -> str:
    """The name of a user file's generation: its content's hash, so equal content means an equal name."""
    return f"{USER_FILE}-{hashlib.sha256(data).hexdigest()[:16]}"


def publish_user_file(client: docker.DockerClient, image: str, project: str, volume: str, file: File) -> str:
    """Make `file` the user file nginx reads; return its generation's name.

    The content goes in as htpasswd-<hash>, never changed afterwards, then
    the link `htpasswd` is pointed at it in one rename. nginx resolves the
    link on every request and keys its cache of verified credentials by the
    file it points to, so once this returns no earlier verification counts.
    The previous file stays (a verification in flight may be reading it);
    older ones go.
    """
    name = user_file_name(file.data)
    stage = f"{_STAGE}-{secrets.token_hex(4)}"
    target = "/volume"
    # $1 the volume, $2 the staging directory, $3 the new file, $4 the link
    script = (
        'set -e; cd "$1"; mv -f "$2/$3" "$3"; previous="$(readlink "$4" || true)"; mv -f "$2/$4" "$4"; '
        'for f in "$4"-*; do [ "$f" = "$3" ] || [ "$f" = "$previous" ] || rm -f "$f"; done; rm -rf "$2"'
    )
    code, output = _run_helper(
        client, image, project, ["sh", "-c", script, "sh", target, stage.lstrip("/"), name, USER_FILE],
        archives=[(target, archive({name: file}, prefix=stage, links={USER_FILE: name}))],
        mounts=[Mount(target, volume, type="volume", no_copy=True)],
    )
    if code != 0:
        raise StackError(f"writing the user file into its volume failed: {output}")
    return name


def read_files(client: docker.DockerClient, image: str, project: str,
               wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, bytes]]:
    """Files from named volumes, {volume: {path: content}}, for those that exist: a helper container is
    created, never started, and read with get_archive. A volume that does not exist is not created."""
    mounts, where = [], {}
    for index, volume in enumerate(sorted(wanted)):
        try:
            client.volumes.get(volume)
        except NotFound:
            continue
        mounts.append(Mount(f"/volumes/{index}", volume, type="volume", read_only=True, no_copy=True))
        where[volume] = f"/volumes/{index}"
    found: dict[str, dict[str, bytes]] = {volume: {} for volume in where}
    if not mounts:
        return found
    container = client.containers.create(image, command=["true"], entrypoint=[], mounts=mounts,
                                         labels={LABEL_PROJECT: project, "rumistack.role": "helper"},
                                         network_mode="none")
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


def nginx_version(client: docker.DockerClient, image: str, project: str) -> tuple[int, int, int] | None:
    """The version of nginx in `image` (from `nginx -v`), None if it does not say."""
    _, output = _run_helper(client, image, project, ["nginx", "-v"])
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", output)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


class EngineVolumes:
    """The project's named volumes ({volume}: `<project>_{volume}`), reached through the Docker engine.
    `prepare` runs before the helper containers: it makes sure the nginx image is here."""

    def __init__(self, client: docker.DockerClient, config: Config, prepare: Callable[[], object] = lambda: None) -> None:
        self._client = client
        self._config = config
        self._prepare = prepare

    def exists(self, volume: str) -> bool:
        try:
            self._client.volumes.get(volume_name(self._config, volume))
        except NotFound:
            return False
        return True

    def ensure(self, volume: str) -> None:
        """Create the volume (with rumistack's and compose's labels) unless it is there."""
        if not self.exists(volume):
            self._client.volumes.create(volume_name(self._config, volume), labels=volume_labels(self._config, volume))

    def check(self, files: dict[str, str], others: dict[str, File]) -> None:
        self._prepare()
        check_config(self._client, self._config.nginx_image, self._config.project, files, others)

    def read(self, wanted: dict[str, tuple[str, ...]]) -> dict[str, dict[str, bytes]]:
        self._prepare()
        found = read_files(self._client, self._config.nginx_image, self._config.project,
                           {volume_name(self._config, volume): paths for volume, paths in wanted.items()})
        return {volume: found[volume_name(self._config, volume)] for volume in wanted
                if volume_name(self._config, volume) in found}

    def nginx_version(self) -> tuple[int, int, int] | None:
        self._prepare()
        return nginx_version(self._client, self._config.nginx_image, self._config.project)

    def write(self, volumes: dict[str, dict[str, File]]) -> None:
        self._prepare()
        for volume in volumes:
            self.ensure(volume)
        write_files(self._client, self._config.nginx_image, self._config.project,
                    {volume_name(self._config, volume): files for volume, files in volumes.items()})

    def publish_user_file(self, volume: str, file: File) -> None:
        self._prepare()
        self.ensure(volume)
        publish_user_file(self._client, self._config.nginx_image, self._config.project, volume_name(self._config, volume), file)

"""Images rumistack builds itself, from a tiny context of its own package files (the verifier's).

The tag holds a hash of the context, so an image is built once per version of its files; the base
image it was built on is a label, so a new base builds it again. `rumistack up` builds with the
Docker SDK; the compose bundle gives compose the same Dockerfile and context (`build:`).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from importlib import resources

import docker
from docker.errors import DockerException, ImageNotFound

from .errors import StackError
from .progress import Progress
from .pull import reason

LABEL_BASE = "rumistack.base-image"


@dataclass(frozen=True)
class Build:
    """An image built from files of the rumistack package: `dockerfile` is one of `files`."""

    repository: str
    files: tuple[str, ...]
    dockerfile: str
    base_image: str  # its BASE_IMAGE build argument (or what a renderer writes for the setting)

    @property
    def tag(self) -> str:
        digest = hashlib.sha256()
        for name in self.files:
            digest.update(name.encode() + b"\0" + _read(name) + b"\0")
        return f"{self.repository}:{digest.hexdigest()[:16]}"


def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def _context(build: Build) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name in build.files:
            data = _read(name)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def built(client: docker.DockerClient, build: Build, progress: Progress) -> str:
    """The image's id, built first unless an image of this tag and base is here."""
    try:
        image = client.images.get(build.tag)
        if image.labels.get(LABEL_BASE) == build.base_image:
            return image.id
    except ImageNotFound:
        pass
    progress.step(f"building {build.tag} from {build.base_image} (once per version)")
    try:
        for event in client.api.build(fileobj=_context(build), custom_context=True, tag=build.tag,
                                      dockerfile=build.dockerfile, buildargs={"BASE_IMAGE": build.base_image},
                                      labels={LABEL_BASE: build.base_image}, rm=True, forcerm=True, decode=True):
            if "error" in event:
                raise StackError(_failed(build, event["error"].strip()))
            line = event.get("stream", "").strip()
            if line.startswith("Step "):
                progress.step(f"  {line}")
        return client.images.get(build.tag).id
    except DockerException as exc:
        raise StackError(_failed(build, reason(exc))) from None


def _failed(build: Build, why: str) -> str:
    return (f"could not build {build.tag} ({why}): RUMISTACK_TOOLS_BASE_IMAGE ({build.base_image}) must be a "
            "Debian-based Python image here or pullable, and its pip must reach PyPI")

"""Images: found on this machine, or pulled with each layer's progress."""

from __future__ import annotations

import docker
from docker.errors import DockerException, ImageNotFound
from docker.utils import parse_repository_tag

from .errors import StackError
from .progress import Progress


def reason(exc: DockerException) -> str:
    """The engine's own words for what went wrong."""
    return getattr(exc, "explanation", None) or str(exc)


def image_id(client: docker.DockerClient, ref: str, progress: Progress) -> str:
    """The image's id, pulling it when it is not here."""
    try:
        return client.images.get(ref).id
    except ImageNotFound:
        pass
    progress.step(f"pulling {ref}")
    repository, tag = parse_repository_tag(ref)
    try:
        for event in client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise StackError(_pull_failed(ref, event["error"]))
            if "id" in event and "status" in event:
                detail = event.get("progressDetail") or {}
                progress.layer(ref, event["id"], event["status"], detail.get("current"), detail.get("total"))
        return client.images.get(ref).id
    except DockerException as exc:
        raise StackError(_pull_failed(ref, reason(exc))) from None


def _pull_failed(ref: str, why: str) -> str:
    return (f"image {ref} is not on this machine and could not be pulled ({why}): "
            "check the name in .env, or build or load the image first")

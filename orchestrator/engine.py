"""The Docker engine: reaching it, and having an image locally."""

from __future__ import annotations

from collections.abc import Callable

import docker
from docker.errors import DockerException, ImageNotFound

from .errors import DockerUnavailable, StackError


def connect() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise DockerUnavailable(
            f"cannot reach the Docker engine ({exc.__class__.__name__}): start it "
            "(`systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at it"
        ) from None
    return client


def ensure_image(client: docker.DockerClient, ref: str, step: Callable[[str], None] = lambda message: None) -> str:
    """The image's id, pulling it when it is not here."""
    try:
        return client.images.get(ref).id
    except ImageNotFound:
        pass
    step(f"pulling {ref}")
    try:
        return client.images.pull(ref).id
    except DockerException as exc:
        raise StackError(
            f"image {ref} is not on this machine and could not be pulled ({reason(exc)}): "
            "check the name in .env, or build or load the image first"
        ) from None


def reason(exc: DockerException) -> str:
    return getattr(exc, "explanation", None) or str(exc)

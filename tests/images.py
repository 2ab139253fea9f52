"""Local test images, built here because no image registry is reachable.

- rumistack-test/debian:bookworm: a Debian base made by debootstrap, with
  nginx-light, python3 and wget.
- rumistack-test/nginx:local: nginx from that base (tests/images/nginx).
- rumistack-test/rumitalk-stub:local: the RumiTalk stand-in (tests/images/rumitalk-stub).
- rumistack-test/mongo-stub:local, rumistack-test/meili-stub:local: stand-ins for
  RumiTalk's MongoDB and Meilisearch (tests/images/mongo-stub, meili-stub).
- rumistack-test/python:local: a Debian-based Python like the official image
  (tests/images/python), the base of the compose bundle's tools image. It
  gets this machine's CA certificates, so pip in builds FROM it reaches PyPI
  wherever the host's pip does (here, through a TLS-inspecting proxy).
- rumistack-test/ai-stub:local: a stand-in AI provider, OpenAI-compatible, that
  records the key and model it was asked with (tests/images/ai-stub).
- rumistack-test/static-upstream:local: a static asset in RumiTalk's place, for
  the benchmark (tests/images/static-upstream).
- rumistack-test/certbot:local: certbot from Debian, for RUMISTACK_CERTBOT_IMAGE (tests/images/certbot).
- rumistack-test/pebble:local: Let's Encrypt's ACME test server and its DNS
  test server (tests/images/pebble).
- rumistack-test/nginx-trixie:local: nginx 1.26 from Debian 13, the newer
  config syntax (tests/images/nginx-trixie).
- rumistack-test/docker-node:local: a Docker engine in a container, for test
  swarms and an engine a test may restart (tests/images/docker-node).
- rumistack-test/redis:local: Debian's redis-server, for RUMISTACK_REDIS_IMAGE
  (tests/images/redis).

Each image carries a label with a hash of its recipe and is rebuilt only when
the recipe changes. Run as a script to build what is missing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

HERE = Path(__file__).parent / "images"
RECIPE_LABEL = "rumistack.recipe"

BASE = "rumistack-test/debian:bookworm"
BASE_PACKAGES = ("nginx-light", "python3", "wget")
NGINX = "rumistack-test/nginx:local"
STUB = "rumistack-test/rumitalk-stub:local"
PYTHON = "rumistack-test/python:local"
MONGO = "rumistack-test/mongo-stub:local"
MEILI = "rumistack-test/meili-stub:local"
STATIC_UPSTREAM = "rumistack-test/static-upstream:local"
CERTBOT = "rumistack-test/certbot:local"
PEBBLE = "rumistack-test/pebble:local"
NGINX_TRIXIE = "rumistack-test/nginx-trixie:local"
AI = "rumistack-test/ai-stub:local"
DOCKER_NODE = "rumistack-test/docker-node:local"
REDIS = "rumistack-test/redis:local"
_CONTEXTS = {NGINX: HERE / "nginx", STUB: HERE / "rumitalk-stub", MONGO: HERE / "mongo-stub", MEILI: HERE / "meili-stub",
             PYTHON: HERE / "python", STATIC_UPSTREAM: HERE / "static-upstream", CERTBOT: HERE / "certbot",
             PEBBLE: HERE / "pebble", NGINX_TRIXIE: HERE / "nginx-trixie", AI: HERE / "ai-stub",
             DOCKER_NODE: HERE / "docker-node", REDIS: HERE / "redis"}
# files of this machine that join an image's build context: {image: {name in the context: path}}
_HOST_FILES = {PYTHON: {"host-ca-certificates.crt": Path("/etc/ssl/certs/ca-certificates.crt")}}


def _debootstrap_args(target: Path) -> list[str]:
    return ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(target)]


def _hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def _base_recipe() -> str:
    return _hash(" ".join(_debootstrap_args(Path("DIR"))).encode())


def _context_recipe(context: Path) -> str:
    files = sorted(p for p in context.rglob("*") if p.is_file())
    return _hash(_base_recipe().encode(), *(str(p.relative_to(context)).encode() + p.read_bytes() for p in files))


def _current(client: docker.DockerClient, name: str, recipe: str) -> bool:
    try:
        image = client.images.get(name)
    except ImageNotFound:
        return False
    return (image.labels or {}).get(RECIPE_LABEL) == recipe


def _build_base(client: docker.DockerClient, recipe: str, log) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing: apt-get install -y debootstrap")
    with tempfile.TemporaryDirectory(prefix="rumistack-base-") as tmp:
        root = Path(tmp) / "root"
        log(f"building {BASE} with debootstrap (about a minute)")
        subprocess.run(_debootstrap_args(root), check=True, stdout=subprocess.DEVNULL)
        # no cached package lists or downloaded .debs in the image
        subprocess.run(["rm", "-rf", f"{root}/var/cache/apt/archives", f"{root}/var/lib/apt/lists"], check=True)
        tarball = Path(tmp) / "root.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repository, tag = BASE.split(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=[f"LABEL {RECIPE_LABEL}={recipe}"]
        )


def ensure_images(client: docker.DockerClient | None = None, log=print) -> dict[str, str]:
    """Build every local test image that is missing or whose recipe changed.

    Each image is tagged twice: `:local`, the name to use by hand, and
    `:r-<recipe hash>`, which the tests use, so that test runs of different
    checkouts sharing one engine each get the image of their own recipe.
    Returns {`:local` name: `:r-<recipe>` name}.
    """
    client = client or docker.from_env()
    base_recipe = _base_recipe()
    if not _current(client, BASE, base_recipe):
        _build_base(client, base_recipe, log)
    pinned = {}
    for name, context in _CONTEXTS.items():
        with tempfile.TemporaryDirectory(prefix="rumistack-context-") as tmp:
            staged = Path(tmp) / "context"
            shutil.copytree(context, staged)
            for target, source in _HOST_FILES.get(name, {}).items():
                shutil.copyfile(source, staged / target)
            recipe = _context_recipe(staged)
            pinned[name] = f"{name.rsplit(':', 1)[0]}:r-{recipe}"
            if not _current(client, pinned[name], recipe):
                log(f"building {name}")
                client.images.build(path=str(staged), tag=pinned[name], labels={RECIPE_LABEL: recipe}, rm=True, pull=False)
        if not _current(client, name, recipe):
            client.images.get(pinned[name]).tag(name)
    return pinned


if __name__ == "__main__":
    ensure_images(log=lambda message: print(message, file=sys.stderr, flush=True))

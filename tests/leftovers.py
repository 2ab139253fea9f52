"""What a crashed test run left on the Docker engine, found and removed by
the next run.

Other test runs (other checkouts) may use the same engine at the same time,
so a run's objects are removed only when the run is provably over: each
run holds a lock (flock) on its own file, RUNS_DIR/<run id>, for as long as
its process lives, and the kernel lets go of it when the process ends,
however it ends. A run whose file is there and not locked has ended; a run
without a file is left alone (it may be one this machine cannot see).

A run's objects: those labelled rumistack.test=<run id>, and those of the
projects whose name carries the run id (testenv.TEST_PROJECT) by their
project label, rumistack's or compose's, including the tools image that
compose builds for a bundle, <project>-rumistack."""

from __future__ import annotations

import fcntl
import os
import warnings
from pathlib import Path
from typing import IO

import docker
from docker.errors import APIError, NotFound

from rumistack.spec import COMPOSE_PROJECT, LABEL_PROJECT
from testenv import RUN_ID, TEST_LABEL, TEST_PROJECT

RUNS_DIR = Path("/tmp/rumistack-test-runs")
_PROJECT_LABELS = (LABEL_PROJECT, COMPOSE_PROJECT)


def hold_run_lock(run_id: str = RUN_ID, runs_dir: Path = RUNS_DIR) -> IO[bytes]:
    """Lock the run's file for as long as the returned file stays open (the process's life).
    The file is locked before it gets its name, so no other run ever sees it unlocked."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    staged = runs_dir / f".{run_id}.{os.getpid()}"
    lock = open(staged, "wb")
    fcntl.flock(lock, fcntl.LOCK_EX)
    lock.write(f"pid {os.getpid()}\n".encode())
    lock.flush()
    os.rename(staged, runs_dir / run_id)
    return lock


def release_run_lock(lock: IO[bytes], run_id: str = RUN_ID, runs_dir: Path = RUNS_DIR) -> None:
    """The run is over and its objects are gone: nothing for a later run to sweep."""
    (runs_dir / run_id).unlink(missing_ok=True)
    lock.close()


def _is_run(name: str) -> bool:
    return len(name) == 12 and all(c in "0123456789abcdef" for c in name)


def sweep(client: docker.DockerClient, runs_dir: Path = RUNS_DIR, own: str = RUN_ID) -> list[str]:
    """Remove the objects of every ended run; return their ids. A run whose objects could not all
    be removed keeps its file, so that the next sweep tries again."""
    swept = []
    for path in sorted(runs_dir.glob("*")) if runs_dir.is_dir() else ():
        if not _is_run(path.name) or path.name == own:
            continue
        try:
            lock = open(path, "rb")
        except FileNotFoundError:
            continue  # another run swept it just now
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # the run's process holds it: alive
            failures = remove_run(client, path.name)
            if failures:
                warnings.warn(f"test run {path.name} left objects that could not be removed: {failures}")
                continue
            path.unlink(missing_ok=True)  # still locked by us, so no other sweep works on it meanwhile
            swept.append(path.name)
    return swept


def _project_of(labels: dict[str, str] | None) -> str | None:
    for key in _PROJECT_LABELS:
        match = TEST_PROJECT.fullmatch((labels or {}).get(key, ""))
        if match:
            return match["run"]
    return None


def _of_run(collection, run_id: str, **list_args) -> list:
    """The objects of `collection` that belong to the run: by the test label or by their project."""
    labelled = {o.id: o for o in collection.list(filters={"label": f"{TEST_LABEL}={run_id}"}, **list_args)}
    for key in _PROJECT_LABELS:
        for o in collection.list(filters={"label": key}, **list_args):
            if _project_of(o.attrs.get("Labels")) == run_id:
                labelled[o.id] = o
    return list(labelled.values())


def remove_run(client: docker.DockerClient, run_id: str) -> list[str]:
    """Remove every object of the run (containers first, then what they used); return what failed."""
    failures = []

    def attempt(what: str, remove) -> None:
        try:
            remove()
        except NotFound:
            pass  # gone already
        except APIError as exc:
            failures.append(f"{what}: {exc.explanation or exc}")

    # sparse: the listing's labels suffice, without inspecting every container on a shared engine
    for container in _of_run(client.containers, run_id, all=True, sparse=True):
        attempt(f"container {container.short_id}", lambda: container.remove(force=True, v=True))
    for network in _of_run(client.networks, run_id):
        attempt(f"network {network.name}", network.remove)
    for volume in _of_run(client.volumes, run_id):
        attempt(f"volume {volume.name}", lambda: volume.remove(force=True))
    for image in client.images.list(filters={"label": f"{TEST_LABEL}={run_id}"}):
        for ref in image.tags or [image.id]:
            attempt(f"image {ref}", lambda: client.images.remove(ref))
    for image in client.images.list():
        for tag in image.tags:
            repository = tag.rsplit(":", 1)[0]
            match = TEST_PROJECT.fullmatch(repository.removesuffix("-rumistack"))
            if repository.endswith("-rumistack") and match and match["run"] == run_id:
                attempt(f"image {tag}", lambda: client.images.remove(tag))  # the tag only: a shared image stays
    remove_cgroups(run_id)
    return failures


CGROUPS = Path("/sys/fs/cgroup")


def remove_cgroups(run_id: str) -> None:
    """The empty cgroups the run's test swarm nodes left (each node's engine puts its containers under
    one of its own, tests/integration/swarmnodes.py); the kernel refuses to remove one still in use."""
    for top in CGROUPS.glob(f"*/rumistack-swarm-{run_id}-*"):
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
            try:
                os.rmdir(directory)
            except OSError:
                pass

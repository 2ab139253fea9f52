"""What a crashed test run left is removed by a later run, and only that: a
run still going, even one in another checkout on the same engine, keeps its
objects. Each fake run here leaves the kinds of object real runs make: a
container and a volume of a `rumistack up` project (rumistack.project), a
network of a compose project (com.docker.compose.project), the tools image
compose builds for a bundle, and a volume with the test label."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from docker.errors import NotFound

import leftovers
from rumistack.spec import COMPOSE_PROJECT, LABEL_PROJECT
from testenv import TEST_LABEL, TEST_LABELS, TEST_PROJECT

HOLD_LOCK = """
import fcntl, sys
lock = open(sys.argv[1], "wb")
fcntl.flock(lock, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # until the test closes the pipe, or ends without closing it
"""


def _leave_objects(client, image: str, run: str, extra_labels: dict[str, str]) -> dict[str, object]:
    """The objects a run `run` would leave behind, by kind."""
    e2e, bundle = f"rumistack-e2e-{run}-0a1b2c", f"rumistack-compose-{run}-0a1b2c"
    assert TEST_PROJECT.fullmatch(e2e) and TEST_PROJECT.fullmatch(bundle)
    tools_image = f"{bundle}-rumistack:latest"
    client.images.get(image).tag(tools_image)
    return {
        "container": client.containers.create(image, ["true"], name=f"{e2e}-nginx",
                                              labels={LABEL_PROJECT: e2e, **extra_labels}),
        "project volume": client.volumes.create(f"{e2e}_nginx-config", labels={LABEL_PROJECT: e2e, **extra_labels}),
        "compose network": client.networks.create(f"{bundle}_default", labels={COMPOSE_PROJECT: bundle, **extra_labels}),
        "test volume": client.volumes.create(f"rumistack-test-left-{run}", labels={TEST_LABEL: run}),
        "tools image": tools_image,
    }


def _present(client, kind: str, obj) -> bool:
    try:
        if kind == "tools image":
            return obj in client.images.get(obj).tags
        obj.reload()
        return True
    except NotFound:
        return False


def test_the_sweep_removes_what_an_ended_run_left_and_leaves_a_running_runs_objects(docker_client, test_images):
    ended, running, unseen = (uuid.uuid4().hex[:12] for _ in range(3))
    leftovers.RUNS_DIR.mkdir(parents=True, exist_ok=True)
    (leftovers.RUNS_DIR / ended).write_bytes(b"pid 1\n")  # its process is gone, and its lock with it
    # another process holds the running run's lock, as a test session in another checkout does
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(leftovers.RUNS_DIR / running)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    objects = {}
    try:
        assert holder.stdout.readline() == b"locked\n"
        objects[ended] = _leave_objects(docker_client, test_images["python"], ended, {})
        objects[running] = _leave_objects(docker_client, test_images["python"], running, {})
        # a run without a file may live where this machine cannot see it: it stays. Its objects carry
        # this run's label too, so this run's own cleanup removes them
        objects[unseen] = _leave_objects(docker_client, test_images["python"], unseen, TEST_LABELS)

        swept = leftovers.sweep(docker_client)

        assert ended in swept and running not in swept and unseen not in swept
        assert {kind: _present(docker_client, kind, o) for kind, o in objects[ended].items()} == dict.fromkeys(
            objects[ended], False)
        for run in (running, unseen):
            assert {kind: _present(docker_client, kind, o) for kind, o in objects[run].items()} == dict.fromkeys(
                objects[run], True), run
        assert not (leftovers.RUNS_DIR / ended).exists() and (leftovers.RUNS_DIR / running).exists()
        assert docker_client.images.get(test_images["python"])  # only the tag went, not the shared image

        # once its process ends, the running run has ended too, and the next sweep removes its objects
        holder.stdin.close()
        holder.wait(timeout=10)
        assert running in leftovers.sweep(docker_client)
        assert not any(_present(docker_client, kind, o) for kind, o in objects[running].items())
    finally:
        if holder.poll() is None:
            holder.stdin.close()
            holder.wait(timeout=10)
        for run in (ended, running, unseen):
            leftovers.remove_run(docker_client, run)
            (leftovers.RUNS_DIR / run).unlink(missing_ok=True)


def test_this_runs_own_objects_are_never_swept_while_it_runs(docker_client):
    volume = docker_client.volumes.create(labels=TEST_LABELS)
    try:
        leftovers.sweep(docker_client)
        volume.reload()  # still there: this process holds the run's lock
    finally:
        volume.remove(force=True)


@pytest.mark.parametrize("name", ["rumistack", "rumistack-e2e-1234", "rumibench-0a1b2c3d", "from-env-file",
                                  "rumistack-e2e-0123456789AB-00"])
def test_project_names_without_a_run_id_are_no_test_projects(name):
    assert not TEST_PROJECT.fullmatch(name)

"""`up` pulls a missing image with progress per layer, from a real registry
(Debian's docker-registry) on loopback."""

from __future__ import annotations

import io
import shutil
import subprocess
import time

import pytest
from clirun import PASSWORD, free_port, rumistack

from rumistack.probe import ProbeError, request
from testenv import IN_CI, TEST_LABELS


@pytest.fixture
def registry(tmp_path):
    binary = shutil.which("docker-registry")
    if binary is None:
        message = "docker-registry is missing (scripts/test installs it)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
                      f"http:\n  addr: {address}\n")
    server = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                request(f"http://{address}", "/v2/")
                break
            except ProbeError:
                time.sleep(0.05)
        yield address
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_up_pulls_a_missing_image_showing_each_layer(docker_client, test_images, registry, project, monkeypatch):
    # an image only the registry has: RumiTalk's stand-in plus a layer of its own
    dockerfile = f"FROM {test_images['rumitalk']}\nRUN head -c 200000 /dev/urandom > /pulled-layer\n".encode()
    ref = f"{registry}/rumistack-test/pulled:1"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=ref, labels=TEST_LABELS, rm=True)
    for line in docker_client.api.push(f"{registry}/rumistack-test/pulled", tag="1", stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(ref)

    monkeypatch.setenv("RUMITALK_IMAGE", ref)
    assert rumistack("adduser", "alice", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    try:
        result = rumistack("up")
        assert result.exit_code == 0, result.output
        assert f"- pulling {ref}" in result.output
        assert ": Pull complete" in result.output  # the layer that was only in the registry
        assert ": Already exists" in result.output  # the stand-in's layers
    finally:
        rumistack("down")
        docker_client.images.remove(ref, force=True)

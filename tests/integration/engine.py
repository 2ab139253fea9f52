"""rumistack's volumes through the Docker engine, for tests: built the one
way the product builds them, for a test project of its own."""

from __future__ import annotations

import uuid

import docker

from rumistack.config import load_config
from rumistack.spec import VOLUME_OPTIONS
from rumistack.volumes import EngineVolumes
from testenv import TEST_LABELS


def engine_volumes(client: docker.DockerClient, image: str, *volumes: str) -> EngineVolumes:
    """EngineVolumes of a new test project whose helper containers run `image`; `volumes` are created
    first, with the test label, so that the session's cleanup removes them."""
    config = load_config("/nonexistent", environ={"RUMISTACK_PROJECT": f"rumistack-test-{uuid.uuid4().hex[:8]}",
                                                  "RUMISTACK_NGINX_IMAGE": image})
    engine = EngineVolumes(client, config)
    for volume in volumes:
        client.volumes.create(engine.docker_name(volume), driver="local", driver_opts=VOLUME_OPTIONS.get(volume),
                              labels=TEST_LABELS)
    return engine

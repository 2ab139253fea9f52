"""The stand-in AI provider (tests/images/ai-stub) on a stack's network, as
`ai`, for stacks that rumistack or compose start; and what it was asked."""

from __future__ import annotations

import json
import time

import docker
from docker.models.containers import Container

from testenv import TEST_LABELS

ALIAS = "ai"
BASE_URL = f"http://{ALIAS}:8000/v1"  # OPENAI_REVERSE_PROXY for the RumiTalk stand-in


def settings(key: str) -> str:
    """RumiTalk's settings file that points its openAI endpoint at the stand-in provider with `key`."""
    return f"OPENAI_API_KEY={key}\nOPENAI_REVERSE_PROXY={BASE_URL}\n"


def start(client: docker.DockerClient, image: str, network: str, key: str) -> Container:
    """The provider on `network`, refusing any key but `key`; it answers once /health does."""
    container = client.containers.run(image, detach=True, labels=TEST_LABELS, environment={"AI_STUB_KEY": key},
                                      network=network,
                                      networking_config={network: client.api.create_endpoint_config(aliases=[ALIAS])})
    deadline = time.monotonic() + 30
    while container.exec_run(["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/health"]).exit_code != 0:
        container.reload()
        if container.status != "running" or time.monotonic() > deadline:
            raise AssertionError(f"the stand-in provider did not start:\n{container.logs().decode()[-2000:]}")
        time.sleep(0.2)
    return container


def requests(container: Container) -> list[dict]:
    """What the provider was asked: one record per request (method, path, the Bearer key, the model)."""
    out = container.logs(stdout=True, stderr=False).decode(errors="replace")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

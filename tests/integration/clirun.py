"""Running the rumistack CLI in tests, in a project of its own."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import docker
from click.testing import CliRunner, Result

from rumistack.cli import cli
from rumistack.spec import LABEL_PROJECT
from testenv import project_name

PASSWORD = "correct horse battery"


def rumistack(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Project:
    name: str
    port: int
    client: docker.DockerClient

    def container_ids(self) -> dict[str, str]:
        """{service: container id} of the project's containers."""
        found = self.client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={self.name}", "rumistack.service"]})
        return {c.labels["rumistack.service"]: c.id for c in found}

    def volume_names(self) -> set[str]:
        found = self.client.volumes.list(filters={"label": f"{LABEL_PROJECT}={self.name}"})
        return {v.name.removeprefix(f"{self.name}_") for v in found}


def new_project_name() -> str:
    """The project's name carries the run's id, so a later run can remove what a crash left (tests/leftovers.py)."""
    return project_name("e2e")

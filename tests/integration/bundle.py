"""The compose bundle in tests: a copy of the checkout as compose's project
directory, the commands of docs/compose.md ("run it") run as written, and
what a running stack is made of, to compare two of them.

Objects that compose and rumistack create for a bundle cannot carry the
test label (the compose file is the product's); like test_cli_up's, they
are known by their project's unique name, and Bundle.remove removes them.
That name carries the run's id (testenv.project_name), so what a crashed
run left is removed by the next one (tests/leftovers.py)."""

from __future__ import annotations

import io
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker
from clirun import PASSWORD, free_port
from docker.errors import NotFound
from docker.models.containers import Container
from testenv import TEST_LABELS, project_name
from web import TlsPort

from rumistack.layout import AUTH_DIR, CONF_DIR, TLS_DIR
from rumistack.spec import COMPOSE_PROJECT, LABEL_PROJECT, LABEL_SERVICE, network_labels
from rumistack.tls import SELF_SIGNED_CERT

ROOT = Path(__file__).parents[2]
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".rumistack", ".env",
                                     ".pytest_cache", ".hypothesis", "build")


DOCS_PAGE, DOCS_SECTION = ROOT / "docs" / "compose.md", "run it"  # the bundle's commands, as self-hosters read them


def docs_blocks() -> list[list[str]]:
    """The command lines of each code block in docs/compose.md's "run it" section."""
    page = DOCS_PAGE.read_text()
    heading = f"\n## {DOCS_SECTION}\n"
    assert heading in page, f"{DOCS_PAGE} has no section {DOCS_SECTION!r}"
    section = page.split(heading, 1)[1].split("\n## ", 1)[0]
    return [[line for line in block.splitlines() if line.strip()] for block in re.findall(r"^```\n(.*?)^```", section, re.S | re.M)]


def docs_command(containing: str) -> str:
    """The one command line of that section that contains `containing`."""
    found = [line for block in docs_blocks() for line in block if containing in line]
    assert len(found) == 1, f"the {DOCS_SECTION!r} section of {DOCS_PAGE.name} has {len(found)} commands with {containing!r}"
    return found[0]


def outside_environment() -> dict[str, str]:
    """This process's environment without the settings of rumistack and compose."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUMISTACK_", "RUMITALK_", "COMPOSE_"))}


@dataclass
class Bundle:
    """A copy of the checkout, and the environment of one project of its own."""

    root: Path
    env: dict[str, str]
    project: str
    http_port: int
    https_port: int
    ai: Container | None = None  # the stand-in AI provider on the bundle's network, when a test starts one
    rendered: str = ""  # what `render` printed, once `follow_docs` ran

    @classmethod
    def create(cls, tmp: Path, image_env: dict[str, str], realm: str = "RumiTalk") -> Bundle:
        """The state directory is the default, .rumistack in the copy, as docs/compose.md has it; HTTPS too,
        with the self-signed certificate `render` makes there."""
        root = tmp / "checkout"
        shutil.copytree(ROOT, root, ignore=_NOT_COPIED)
        project, http_port, https_port = project_name("compose"), free_port(), free_port()
        env = outside_environment()
        env.update(image_env)
        env.update({
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # this rumistack
            "RUMISTACK_PROJECT": project,
            "RUMISTACK_HTTP_PORT": str(http_port),
            "RUMISTACK_HTTPS_PORT": str(https_port),
            "RUMISTACK_BIND_ADDRESS": "127.0.0.1",
            "RUMISTACK_REALM": realm,
        })
        return cls(root, env, project, http_port, https_port)

    @property
    def state_dir(self) -> Path:
        return self.root / ".rumistack"

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate, which the tests trust."""
        return self.state_dir / "tls" / SELF_SIGNED_CERT

    @property
    def port(self) -> TlsPort:
        """nginx's HTTPS port, trusting the self-signed certificate."""
        return TlsPort(self.https_port, ssl.create_default_context(cafile=self.ca_file))

    def sh(self, command: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command line in the checkout's copy, as a self-hoster's shell would."""
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=self.root, env=self.env, input=input,
                                capture_output=True, text=True, timeout=600)
        assert not check or result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def compose(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """`docker compose` with the options docs/compose.md gives it, then `args`."""
        options = docs_command(" down").removesuffix(" down")
        return self.sh(" ".join([options, *args]), input=input)

    def own_network(self, client: docker.DockerClient) -> str:
        """The bundle's network (compose's default name), made here before compose runs, so that a test's
        own containers (a stand-in provider, Pebble, an outside database) can be on it; `remove` takes it."""
        network = f"{self.project}_default"
        client.networks.create(network, driver="bridge", labels={**network_labels(self.project), **TEST_LABELS})
        return network

    def follow_docs(self, env_lines: str = "") -> None:
        """docs/compose.md's commands for hosts without Python, as written, with `env_lines` appended to
        .env right after it is made (a mode); `rendered` keeps what `render` printed."""
        (block,) = [b for b in docs_blocks() if "cp .env.example .env" in b]
        for command in block:
            result = self.sh(command, input=f"{PASSWORD}\n{PASSWORD}\n" if " adduser " in command else None)
            if command.startswith("cp .env.example .env") and env_lines:
                with (self.root / ".env").open("a") as env:
                    env.write(env_lines)
            if command.endswith(" render"):
                self.rendered = result.stdout

    def containers(self, client: docker.DockerClient) -> list[Container]:
        return client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={self.project}"})

    def remove(self, client: docker.DockerClient) -> None:
        """Everything this project made: containers, network, volumes, the tools image."""
        self.sh(docs_command(" down"), check=False)
        for container in self.containers(client):
            container.remove(force=True)
        for label in (LABEL_PROJECT, COMPOSE_PROJECT):
            for network in client.networks.list(filters={"label": f"{label}={self.project}"}):
                network.remove()
        for volume in client.volumes.list(filters={"label": f"{LABEL_PROJECT}={self.project}"}):
            volume.remove(force=True)
        try:
            client.images.remove(f"{self.project}-rumistack")
        except NotFound:
            pass


def files(container: Container, path: str) -> dict[str, tuple[bytes, int, int, int]]:
    """The files below `path` in a container: {path: (content, mode, uid, gid)}; a symbolic
    link's content is b"-> " and its target."""
    stream, _ = container.get_archive(path)
    result = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        for member in tar.getmembers():
            if member.isfile():
                result[member.name] = (tar.extractfile(member).read(), member.mode & 0o7777, member.uid, member.gid)
            elif member.issym():
                result[member.name] = (f"-> {member.linkname}".encode(), member.mode & 0o7777, member.uid, member.gid)
    return result


def definition(container: Container) -> dict:
    """What defines a container, less what differs by who made it (names, ids, tool labels)."""
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    service = config["Labels"][LABEL_SERVICE]
    no_copy = {m["Target"] for m in host.get("Mounts") or [] if (m.get("VolumeOptions") or {}).get("NoCopy")}
    return {
        "image": config["Image"],
        "entrypoint": config["Entrypoint"],
        "command": config["Cmd"],
        "environment": sorted(config["Env"] or []),
        # the one difference by design: compose checks every start interval (see the compose file's header)
        "healthcheck": {k: v for k, v in (config.get("Healthcheck") or {}).items() if k != "Interval"},
        "stop_signal": config.get("StopSignal"),
        "labels": {k: v for k, v in config["Labels"].items() if k in (LABEL_PROJECT, LABEL_SERVICE)},
        "restart": host["RestartPolicy"]["Name"],
        "ports": host["PortBindings"] or {},  # compose writes {} where the SDK writes None
        "tmpfs": host.get("Tmpfs") or {},
        "logging": host["LogConfig"],
        "security_opt": host.get("SecurityOpt"),
        # compose writes capabilities as CAP_CHOWN, the SDK passes CHOWN as it is
        "cap_drop": sorted(c.removeprefix("CAP_") for c in host.get("CapDrop") or []),
        "cap_add": sorted(c.removeprefix("CAP_") for c in host.get("CapAdd") or []),
        "read_only": host.get("ReadonlyRootfs", False),
        "user": config.get("User") or None,
        # compose creates plain volume mounts as binds, the SDK as mounts: compare what Docker mounted
        "mounts": sorted((m["Type"], m["Name"], m["Destination"], m["RW"], m["Destination"] in no_copy)
                         for m in container.attrs["Mounts"]),
        "networks": {name: service in (net.get("Aliases") or []) for name, net in container.attrs["NetworkSettings"]["Networks"].items()},
    }


def snapshot(client: docker.DockerClient, project: str) -> dict:
    """A running stack: each service's definition, and the config, user file and certificate its nginx sees."""
    result = {}
    for container in client.containers.list(filters={"label": f"{LABEL_PROJECT}={project}"}):
        result[container.labels[LABEL_SERVICE]] = definition(container)
        if container.labels[LABEL_SERVICE] == "nginx":
            mounted = {m["Destination"] for m in container.attrs["Mounts"]}  # no certificate with RUMISTACK_TLS=off
            result["nginx files"] = {name: value for path in (CONF_DIR, AUTH_DIR, TLS_DIR) if path in mounted
                                     for name, value in files(container, path).items()}
    return result

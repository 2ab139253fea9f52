"""The parts of a test proxy: the rendered config and the users in named
volumes written by rumistack's own volume code, and nginx running them the
way the stack does (spec.py)."""

from __future__ import annotations

import uuid

from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from rumistack.config import load_config
from rumistack.render import AUTH_DIR, CONF_DIR, MAIN_FILE, render
from rumistack.spec import AUTH_TMPFS_MOUNT, NGINX_GID
from rumistack.users import UserFile
from rumistack.volumes import File, publish_user_file, write_files
from testenv import TEST_LABELS

USER, PASSWORD, REALM = "alice", "correct horse battery", "RumiTalk Test"


def users_file(users: UserFile) -> File:
    return File(users.content(), mode=0o640, gid=NGINX_GID)


def volumes(docker_client, image: str, users: UserFile | None) -> tuple[str, str]:
    """A config volume with the rendered config and an auth volume with `users` (None: an empty one)."""
    suffix = uuid.uuid4().hex[:8]
    config = load_config("/nonexistent", environ={"RUMISTACK_REALM": REALM})
    conf_volume = docker_client.volumes.create(f"rumistack-test-conf-{suffix}", labels=TEST_LABELS).name
    auth_volume = docker_client.volumes.create(f"rumistack-test-auth-{suffix}", labels=TEST_LABELS).name
    write_files(docker_client, image, "test", {
        conf_volume: {name: File(text.encode()) for name, text in render(config).items()}})
    if users is not None:
        publish_user_file(docker_client, image, "test", auth_volume, users_file(users))
    return conf_volume, auth_volume


def nginx_container(image: str, network: Network, conf_volume: str, auth_volume: str) -> DockerContainer:
    """nginx running the rendered config from the volumes, with the stack's tmpfs."""
    return (
        DockerContainer(image)
        .with_network(network)
        .with_command(["nginx", "-c", f"{CONF_DIR}/{MAIN_FILE}", "-g", "daemon off;"])
        .with_volume_mapping(conf_volume, CONF_DIR, "ro")
        .with_volume_mapping(auth_volume, AUTH_DIR, "ro")
        .with_tmpfs_mount(AUTH_TMPFS_MOUNT.target, AUTH_TMPFS_MOUNT.options)  # the options, despite its name
        .with_kwargs(labels=TEST_LABELS)
        .with_exposed_ports(80)
    )

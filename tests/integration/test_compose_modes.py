"""The compose bundle in the modes beyond the default stack, against real
containers: search on, an external MongoDB and plain HTTP (RUMISTACK_TLS=off,
as behind a proxy of the self-hoster's that holds the certificate): one
bundle in the three modes at once, to keep the suite's time down.
docs/compose.md's commands run as
written, with the mode's lines added to .env as a self-hoster would; then
the auth matrix and `rumistack check` against the bundle, each mode's own
proof, and `rumistack up` giving the same stack as compose."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from bundle import Bundle, snapshot
from click.testing import CliRunner
from testenv import TEST_LABELS
from web import basic, login, send

from rumistack.check import audit
from rumistack.cli import cli
from rumistack.spec import LABEL_PROJECT

PASSWORD = "correct horse battery"
ALICE = {"Authorization": basic("alice", PASSWORD)}
OUTSIDE_MONGO = "mongodb://outside-mongo:27017/RumiTalk"  # a MongoDB of the self-hoster's, not the project's
MODE = f"RUMISTACK_SEARCH=true\nRUMISTACK_MONGO_URI={OUTSIDE_MONGO}\nRUMISTACK_TLS=off\nCOMPOSE_PROFILES=search\n"


def _service(client, bundle: Bundle, service: str):
    return client.containers.list(all=True, filters={"label": [f"{LABEL_PROJECT}={bundle.project}",
                                                               f"rumistack.service={service}"]})


@pytest.fixture(scope="module")
def modes_bundle(docker_client, test_images, image_env, compose_plugin, tmp_path_factory) -> Iterator[Bundle]:
    """The bundle up by docs/compose.md's commands, .env with search on, an outside MongoDB (a stand-in
    on the bundle's network, not one of the project's services) and TLS off."""
    bundle = Bundle.create(tmp_path_factory.mktemp("compose-modes"), image_env)
    network = bundle.own_network(docker_client)
    outside = docker_client.containers.run(
        test_images["mongodb"], detach=True, labels=TEST_LABELS, network=network,
        networking_config={network: docker_client.api.create_endpoint_config(aliases=["outside-mongo"])})
    bundle.outside = outside
    try:
        bundle.follow_docs(MODE)
        yield bundle
    finally:
        outside.remove(force=True)  # before compose removes the network
        bundle.remove(docker_client)


def test_render_says_which_profile_the_mode_needs(modes_bundle):
    assert ("this configuration needs compose's profile search: put COMPOSE_PROFILES=search into .env, or start it "
            "with: docker compose --project-directory . -f compose/docker-compose.yml --profile search up -d --wait"
            in modes_bundle.rendered)


def test_the_auth_matrix_and_rumistack_check_pass_against_the_bundle(modes_bundle):
    port = modes_bundle.http_port
    for path in ("/", "/c/new", "/healthz", "/api/convos"):
        assert send(port, path).status == 401, path
    assert send(port, "/", headers={"Authorization": basic("alice", "wrong")}).status == 401
    assert send(port, "/", headers=ALICE).status == 200
    assert send(port, "/health").status == 200
    url = f"http://127.0.0.1:{port}"
    failures = {f"{r.case.target} [{r.case.credentials}]": r.note for r in audit(url, "alice", PASSWORD) if not r.ok}
    assert failures == {}
    checked = CliRunner().invoke(cli, ["check", url, "--user", "alice", "--password-stdin"], input=PASSWORD + "\n")
    assert checked.exit_code == 0 and ": 0 failed" in checked.output, checked.output


def test_search_the_stand_in_reaches_meilisearch_with_the_master_key(modes_bundle, docker_client):
    (meili,) = _service(docker_client, modes_bundle, "meilisearch")
    assert meili.status == "running"
    token = login(modes_bundle.http_port)
    answer = send(modes_bundle.http_port, "/api/search/enable", headers={"Authorization": f"Bearer {token}"})
    assert (answer.status, answer.body) == (200, b"true")  # Meilisearch's stand-in refuses any other key


def test_an_external_mongodb_no_mongodb_container_and_the_stand_in_connected_to_the_outside_one(modes_bundle,
                                                                                               docker_client):
    assert _service(docker_client, modes_bundle, "mongodb") == []
    (rumitalk,) = _service(docker_client, modes_bundle, "rumitalk")
    assert f"MONGO_URI={OUTSIDE_MONGO}" in rumitalk.attrs["Config"]["Env"]
    rumitalk.reload()
    address = rumitalk.attrs["NetworkSettings"]["Networks"][f"{modes_bundle.project}_default"]["IPAddress"]
    assert f"connection from {address}" in modes_bundle.outside.logs().decode()


def test_tls_off_nginx_publishes_the_http_port_alone_and_mounts_no_certificate(modes_bundle, docker_client):
    (nginx,) = _service(docker_client, modes_bundle, "nginx")
    assert list(nginx.attrs["HostConfig"]["PortBindings"]) == ["80/tcp"]
    assert {m["Name"] for m in nginx.attrs["Mounts"]} == {
        f"{modes_bundle.project}_{volume}" for volume in ("nginx-config", "nginx-auth", "auth-verifier")}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", modes_bundle.https_port), timeout=5).close()
    # the templates of the TLS modes, one of which nginx extends, run no container
    assert {c.labels.get("com.docker.compose.service") for c in modes_bundle.containers(docker_client)} == {
        "meilisearch", "rumitalk", "verifier", "nginx"}


def test_compose_and_rumistack_up_run_the_same_stack_in_these_modes(modes_bundle, docker_client):
    """The same definitions, nginx config, user file and certificate; the last test of the module (it
    leaves the stack to `rumistack up`)."""
    by_compose = snapshot(docker_client, modes_bundle.project)
    assert set(by_compose) == {"meilisearch", "rumitalk", "verifier", "nginx", "nginx files"}
    modes_bundle.compose("rm", "--stop", "--force")  # keeps the network, where the outside MongoDB is
    modes_bundle.sh("rumistack up")
    assert snapshot(docker_client, modes_bundle.project) == by_compose

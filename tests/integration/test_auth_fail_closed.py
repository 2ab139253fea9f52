"""nginx fails closed: without the tmpfs for the cache it does not start, and
without a user file no one gets in."""

from proxyparts import PASSWORD, USER, nginx_container, volumes
from testcontainers.core.wait_strategies import HttpWaitStrategy
from web import basic, send

from rumistack.render import AUTH_DIR, CONF_DIR, MAIN_FILE
from testenv import TEST_LABELS


def test_nginx_without_the_cache_tmpfs_does_not_start(docker_client, test_images, stub_network):
    network, _ = stub_network
    conf_volume, auth_volume = volumes(docker_client, test_images["nginx"], users=None)
    container = docker_client.containers.run(
        test_images["nginx"], ["nginx", "-c", f"{CONF_DIR}/{MAIN_FILE}", "-g", "daemon off;"],
        volumes={conf_volume: {"bind": CONF_DIR, "mode": "ro"}, auth_volume: {"bind": AUTH_DIR, "mode": "ro"}},
        network=network.name,
        labels=TEST_LABELS, detach=True,
    )
    assert container.wait(timeout=30)["StatusCode"] != 0
    assert "/run/rumistack/cache" in container.logs().decode()


def test_without_a_user_file_no_one_gets_in(docker_client, test_images, stub_network):
    network, _ = stub_network
    conf_volume, auth_volume = volumes(docker_client, test_images["nginx"], users=None)
    nginx = nginx_container(test_images["nginx"], network, conf_volume, auth_volume).waiting_for(
        HttpWaitStrategy(80, "/health").for_status_code(200))
    with nginx:
        port = int(nginx.get_exposed_port(80))
        for headers, status in (({}, 401), ({"Authorization": basic(USER, PASSWORD)}, 500)):
            answer = send(port, "/", headers=headers)
            assert answer.status == status
            assert answer.seen is None
        assert send(port, "/health").status == 200  # the exemptions still answer

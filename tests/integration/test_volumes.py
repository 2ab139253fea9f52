"""Config checks and volume writes through helper containers of the nginx image."""

import pytest
from engine import engine_volumes

from rumistack.config import load_config
from rumistack.errors import StackError
from rumistack.render import render
from rumistack.volumes import File, user_file_name
from testenv import TEST_LABELS


def test_nginx_accepts_the_rendered_config(docker_client, test_images):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    engine_volumes(docker_client, test_images["nginx"]).check(files, {})


def test_a_config_nginx_refuses_is_reported_with_nginxs_words(docker_client, test_images):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off"}))
    files["snippets/proxy.conf"] += "proxy_no_such_directive on;\n"
    with pytest.raises(StackError, match='unknown directive "proxy_no_such_directive"'):
        engine_volumes(docker_client, test_images["nginx"]).check(files, {})


def test_files_land_in_the_volume_with_their_owner_and_mode(docker_client, test_images):
    engine = engine_volumes(docker_client, test_images["nginx"], "v")
    engine.write({"v": {"htpasswd": File(b"alice:$2y$12$x\n", mode=0o640, gid=101), "sub/dir/f.conf": File(b"x")}})
    engine.write({"v": {"htpasswd": File(b"bob:$2y$12$y\n", mode=0o640, gid=101)}})
    listing = docker_client.containers.run(
        test_images["nginx"], ["sh", "-c", "cd /v && stat -c '%n %a %u %g' htpasswd sub/dir/f.conf && cat htpasswd && ls -A"],
        volumes={engine.docker_name("v"): {"bind": "/v", "mode": "ro"}}, remove=True, labels=TEST_LABELS,
    ).decode()
    assert listing.splitlines() == ["htpasswd 640 0 101", "sub/dir/f.conf 644 0 0", "bob:$2y$12$y", "htpasswd", "sub"]


def _listing(docker_client, image: str, volume: str) -> list[str]:
    return docker_client.containers.run(
        image, ["sh", "-c", "cd /v && for f in *; do stat -c '%N %a %u %g' \"$f\"; done && cat htpasswd"],
        volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True, labels=TEST_LABELS,
    ).decode().splitlines()


def test_the_user_file_link_points_at_the_newest_content_and_keeps_one_before_it(docker_client, test_images):
    engine = engine_volumes(docker_client, test_images["nginx"], "auth")
    contents = [b"alice:$2y$12$a\n", b"alice:$2y$12$b\n", b"alice:$2y$12$c\n"]
    for data in contents:
        engine.publish_user_file("auth", File(data, mode=0o640, gid=101))
    _, previous, current = (user_file_name(data) for data in contents)
    assert _listing(docker_client, test_images["nginx"], engine.docker_name("auth")) == [
        f"'htpasswd' -> '{current}' 777 0 0",
        *sorted(f"'{name}' 640 0 101" for name in (previous, current)),
        "alice:$2y$12$c",
    ]


def test_the_same_content_gets_the_same_name_and_other_content_another():
    assert user_file_name(b"alice:$2y$12$a\n") == user_file_name(b"alice:$2y$12$a\n")
    assert user_file_name(b"alice:$2y$12$a\n") != user_file_name(b"alice:$2y$12$b\n")
    assert user_file_name(b"x").startswith("htpasswd-")

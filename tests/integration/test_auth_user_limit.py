"""Failed verifications of one user name are limited from any number of addresses: wrong passwords for
alice sent from several containers (each its own address, none over its own limit) are throttled, while
bob still verifies and alice's credential, verified before, keeps working (so the limit is no lock-out).
Its own nginx and verifier (`containers_proxy` is per module)."""

import time
from collections import Counter

from conftest import running_proxy
from rumistack.config import load_config
from rumistack.render import render
from web import basic, send
from testenv import TEST_LABELS

ADDRESSES, GUESSES = 4, 4  # 16 guesses for one name: over its burst (10), each address far under its own (20)


def _guess_from_containers(docker_client, image: str, proxy) -> Counter:
    """The statuses of GUESSES wrong passwords for the proxy's user from each of ADDRESSES containers on the
    proxy's network, sent to nginx's own address there."""
    nginx = proxy.nginx.get_wrapped_container()
    nginx.reload()
    ((network, settings),) = nginx.attrs["NetworkSettings"]["Networks"].items()
    guessers = []
    for a in range(ADDRESSES):
        # its own address first: Docker writes it into the last line of /etc/hosts
        script = "; ".join(["echo address $(tail -n 1 /etc/hosts | cut -f 1)"] + [
            f"wget -q -S -O /dev/null --header 'Authorization: {basic(proxy.user, f'guess {a}-{g}')}' "
            f"http://{settings['IPAddress']}/ 2>&1 | grep -o 'HTTP/1.1 [0-9]*'" for g in range(GUESSES)])
        guessers.append(docker_client.containers.run(image, ["sh", "-c", script], network=network,
                                                     labels=TEST_LABELS, detach=True))
    statuses: Counter = Counter()
    addresses = set()
    for guesser in guessers:
        guesser.wait(timeout=60)
        lines = guesser.logs().decode().splitlines()
        addresses.add(lines[0].split()[1])
        statuses.update(line.split()[1] for line in lines[1:])
        guesser.remove(force=True)
    assert len(addresses) == ADDRESSES and settings["IPAddress"] not in addresses
    return statuses


def test_guesses_for_one_name_from_many_addresses_are_throttled_and_nobody_is_locked_out(
        containers_proxy, docker_client, test_images):
    proxy = containers_proxy
    proxy.add_user("bob", "bobs own password")  # a new user file: nothing of the old one is cached
    alice = {"Authorization": basic(proxy.user, proxy.password)}
    assert send(proxy.port, "/", headers=alice).status == 200  # verified, cached from now on

    statuses = _guess_from_containers(docker_client, test_images["nginx"], proxy)
    assert sum(statuses.values()) == ADDRESSES * GUESSES
    # throttled by the name's limit: each address sent 4 (its own limit lets 20 through at once), and all of
    # them 18 with alice's and _fresh's verifications (the total lets 20 through at once). how many got
    # through depends on the time the guesses took (the name's limit lets one more through each 6 s)
    assert set(statuses) == {"401", "429"}
    throttled = [line for line in proxy.logs().splitlines() if "limiting requests" in line]
    assert throttled == []  # the limits log at info level only: a flood is no log volume

    assert send(proxy.port, "/", headers=alice).status == 200  # the cached credential keeps working
    assert send(proxy.port, "/", headers={"Authorization": basic("bob", "bobs own password")}).status == 200
    assert send(proxy.port, "/", headers={"Authorization": basic("bob", "a wrong one")}).status == 401


def test_a_cached_credential_keeps_working_past_its_entry_while_its_name_is_throttled(
        docker_client, test_images, tmp_path):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_TLS": "off", "RUMISTACK_AUTH_CACHE_SECONDS": "3"}))
    with running_proxy(docker_client, test_images, tmp_path, files) as proxy:
        alice = {"Authorization": basic(proxy.user, proxy.password)}
        assert send(proxy.port, "/", headers=alice).status == 200  # verified, cached for 3 s
        time.sleep(4)  # past the entry's 3 s: the next request needs a verification
        assert "429" in _guess_from_containers(docker_client, test_images["nginx"], proxy)  # the name throttled
        assert send(proxy.port, "/", headers=alice).status == 200  # and its owner still gets in
        wrong = {"Authorization": basic(proxy.user, "one more guess")}
        assert send(proxy.port, "/", headers=wrong).status == 429  # while the name is still throttled
        # a user change is a new cache key: no old entry to fall back on (a revoked credential gets none)
        proxy.add_user("bob", "bobs own password")
        assert send(proxy.port, "/", headers=alice).status == 429  # until the name's limit lets one through

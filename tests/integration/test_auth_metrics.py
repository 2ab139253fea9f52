"""The auth counters move as requests come: a cache hit, a miss that verifies, a wrong password and an
unknown user (each a bcrypt: the unknown name's against the dummy hash), throttled refusals; and the
metrics are on the verifier's own network only, never behind nginx's published ports. Its own nginx and
verifier (`containers_proxy` is per module), so only this module's requests count."""

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from web import basic, send

from rumistack.layout import VERIFIER_METRICS_PORT

HIT, MISS = 'rumistack_auth_cache_total{result="hit"}', 'rumistack_auth_cache_total{result="miss"}'
WRONG, UNKNOWN = ('rumistack_auth_failures_total{reason="wrong_password"}',
                  'rumistack_auth_failures_total{reason="unknown_user"}')
BCRYPT_USER, BCRYPT_DUMMY = 'rumistack_auth_bcrypt_total{hash="user"}', 'rumistack_auth_bcrypt_total{hash="dummy"}'
VERIFICATIONS, SUCCESSES = "rumistack_auth_verifications_total", "rumistack_auth_successes_total"
THROTTLED = "rumistack_auth_throttled_total"


def _moved(proxy, before: dict[str, int], expected: dict[str, int]) -> dict[str, int]:
    """The counters once they moved by `expected` from `before` (nginx's events are datagrams, so they
    arrive a moment after the answers); every other counter stays as it was."""
    deadline = time.monotonic() + 10
    while True:
        now = proxy.metrics()
        moved = {name: now[name] - before.get(name, 0) for name in now if now[name] != before.get(name, 0)}
        if moved == expected or time.monotonic() > deadline:
            assert moved == expected
            return now
        time.sleep(0.1)


def test_the_metrics_are_not_behind_the_published_ports(containers_proxy):
    proxy = containers_proxy
    for path in ("/metrics", "/minutes"):
        answer = send(proxy.port, path, headers={"Authorization": basic(proxy.user, proxy.password)})
        assert answer.seen is not None and answer.seen["path"] == path  # RumiTalk's path, as any other
        assert b"rumistack_auth" not in answer.body
    verifier = proxy.verifier
    verifier.reload()
    assert not any(verifier.attrs["NetworkSettings"]["Ports"].values())  # nothing published
    assert f"{VERIFIER_METRICS_PORT}/tcp" not in (verifier.attrs["HostConfig"]["PortBindings"] or {})


def test_each_kind_of_request_moves_its_counters(containers_proxy):
    proxy = containers_proxy
    start = proxy.metrics()
    assert set(start) >= {HIT, MISS, WRONG, UNKNOWN, BCRYPT_USER, BCRYPT_DUMMY, VERIFICATIONS, SUCCESSES, THROTTLED}

    assert send(proxy.port, "/", headers={"Authorization": basic(proxy.user, proxy.password)}).status == 200
    counts = _moved(proxy, start, {HIT: 1})  # verified when the module's nginx started

    assert send(proxy.port, "/", headers={"Authorization": basic(proxy.user, "not it")}).status == 401
    counts = _moved(proxy, counts, {MISS: 1, VERIFICATIONS: 1, BCRYPT_USER: 1, WRONG: 1})

    # an unknown name costs a bcrypt too, against the dummy hash: its refusal takes as long
    assert send(proxy.port, "/", headers={"Authorization": basic("mallory", "whatever")}).status == 401
    counts = _moved(proxy, counts, {MISS: 1, VERIFICATIONS: 1, BCRYPT_DUMMY: 1, UNKNOWN: 1})

    proxy.add_user("bob", "bobs own password")
    assert send(proxy.port, "/", headers={"Authorization": basic("bob", "bobs own password")}).status == 200
    counts = _moved(proxy, counts, {MISS: 1, VERIFICATIONS: 1, BCRYPT_USER: 1, SUCCESSES: 1})

    # requests without credentials, and exemptions, are no auth events
    assert send(proxy.port, "/").status == 401 and send(proxy.port, "/health").status == 200
    _moved(proxy, counts, {})


def test_throttled_refusals_are_counted(containers_proxy):
    proxy = containers_proxy
    before = proxy.metrics()

    def guess(n: int) -> int:
        return send(proxy.port, "/", headers={"Authorization": basic(f"user{n % 3}", f"guess {n}")}).status

    with ThreadPoolExecutor(4) as pool:
        statuses = Counter(pool.map(guess, range(40)))
    assert statuses[429] > 0
    refused = statuses[401]
    _moved(proxy, before, {MISS: 40, THROTTLED: statuses[429], VERIFICATIONS: refused, UNKNOWN: refused,
                           BCRYPT_DUMMY: refused})

"""Failed verifications are rate-limited: a burst of wrong passwords gets
429 while a cached user keeps getting in, and the verifier logs the failures in
the form the fail2ban filter of docs/operations.md reads. Its own nginx and verifier
(`containers_proxy` is per module, and its logs can be read), so no other test's
failures count here."""

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from web import basic, send

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"  # its fail2ban section has the filter
NGINX_DATE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d")  # fail2ban cuts it off before matching


def _failregex() -> re.Pattern:
    line = next(line for line in OPERATIONS.read_text().splitlines() if line.startswith("failregex = "))
    return re.compile(line.removeprefix("failregex = ").replace("<HOST>", r"(?P<host>\S+)"))


def test_a_burst_of_wrong_passwords_is_throttled_while_a_cached_user_gets_in(containers_proxy):
    proxy = containers_proxy  # the stack whose nginx logs the tests read
    alice = {"Authorization": basic(proxy.user, proxy.password)}
    assert send(proxy.port, "/", headers=alice).status == 200  # verified once, cached from now on

    def guess(n: int):
        return send(proxy.port, "/", headers={"Authorization": basic(proxy.user, f"guess number {n}")})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(guess, range(40)))
    statuses = Counter(answer.status for answer in answers)
    assert set(statuses) == {401, 429}
    assert statuses[401] < 30  # 20 at once per address, then one each 6 s
    throttled = next(answer for answer in answers if answer.status == 429)
    assert throttled.headers["Retry-After"] == "60"
    assert throttled.headers["Connection"] == "close"
    assert b"too many failed logins" in throttled.body
    assert throttled.seen is None

    assert [send(proxy.port, "/", headers=alice).status for _ in range(5)] == [200] * 5


def test_failures_are_logged_with_the_clients_address_for_fail2ban(containers_proxy):
    proxy = containers_proxy  # the stack whose nginx logs the tests read
    send(proxy.port, "/", headers={"Authorization": basic(proxy.user, "not the password")})
    send(proxy.port, "/", headers={"Authorization": basic("mallory", "whatever")})
    send(proxy.port, "/", headers={"Authorization": basic('eve", client: 192.0.2.1', "whatever")})
    lines = proxy.verifier_logs().splitlines()
    failregex = _failregex()
    hosts = [m["host"] for line in lines if (m := failregex.match(NGINX_DATE.sub("", line)))]
    # nginx's access log has the client's address
    client = next(line.split()[0] for line in proxy.logs().splitlines() if '"GET / HTTP/1.1" 401' in line)
    assert len(hosts) >= 3
    assert set(hosts) == {client}
    assert client not in ("127.0.0.1", "unix:")

"""Security headers (nginx/snippets/security-headers.conf) on every answer, exactly once: RumiTalk's
pages and API, nginx's 401, the 429 of too many failed logins, the redirect to HTTPS and the ACME
challenges on port 80; a header RumiTalk sets itself is passed on as it is and not added a second time."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from web import basic, send

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "SAMEORIGIN",
    "Content-Security-Policy": "frame-ancestors 'self'",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=(), usb=(), browsing-topics=()",
}


def _once_each(answer, expected=HEADERS) -> None:
    for name, value in expected.items():
        assert answer.headers.get_all(name) == [value], (name, answer.status, answer.headers.get_all(name))


def test_rumitalks_answers_carry_each_header_once(proxy):
    alice = {"Authorization": basic(proxy.user, proxy.password)}
    for path in ["/", "/c/new", "/assets/index.js"]:
        answer = send(proxy.port, path, headers=alice)
        assert answer.status == 200
        _once_each(answer)
    for path in ["/health", "/api/config", "/api/convos", "/manifest.webmanifest"]:  # exempt: RumiTalk's own answers
        answer = send(proxy.port, path)
        assert answer.seen is not None
        _once_each(answer)


def test_the_basic_challenge_carries_each_header_once(proxy):
    for headers in [{}, {"Authorization": basic(proxy.user, "wrong")}]:
        answer = send(proxy.port, "/", headers=headers)
        assert answer.status == 401 and answer.seen is None
        _once_each(answer)
        assert answer.headers.get_all("Retry-After") is None


def test_a_header_rumitalk_sets_itself_is_kept_and_never_doubled(proxy):
    alice = {"Authorization": basic(proxy.user, proxy.password)}
    own = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'",
        "Permissions-Policy": "microphone=()",
        "Retry-After": "5",
    }
    for path, headers in [("/", alice), ("/api/config", {})]:
        answer = send(proxy.port, path, headers=headers | {"X-Stub-Answer-Header": "\r\nX-Stub-Answer-Header: ".join(
            f"{name}: {value}" for name, value in own.items())})
        assert answer.seen is not None
        _once_each(answer, own)


def test_plain_http_answers_carry_each_header_once(https_proxy):
    redirect = send(https_proxy.http_port, "/c/new")
    assert redirect.status == 301
    _once_each(redirect)
    challenge = send(https_proxy.http_port, "/.well-known/acme-challenge/no-such-token")
    assert challenge.status in (301, 404)
    _once_each(challenge)


@pytest.mark.parametrize("flood", [40])
def test_the_throttled_answer_carries_each_header_once(containers_proxy, flood):
    proxy = containers_proxy
    alice = {"Authorization": basic(proxy.user, proxy.password)}
    assert send(proxy.port, "/", headers=alice).status == 200  # cached before the flood

    def guess(n: int):
        return send(proxy.port, "/", headers={"Authorization": basic(proxy.user, f"guess {n}")})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(guess, range(flood)))
    throttled = [answer for answer in answers if answer.status == 429]
    assert throttled
    for answer in throttled:
        _once_each(answer, HEADERS | {"Retry-After": "60"})
    assert send(proxy.port, "/", headers=alice).status == 200

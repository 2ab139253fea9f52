"""`rumistack check`'s verdicts, without a server: each expectation kind
judged against answers built from raw HTTP (read by probe's own parser, as
real answers are), and the detection of forwarded Basic credentials."""

import base64

import pytest

from rumistack.check import Case, _judge, _leaks
from rumistack.probe import _parse

USER, PASSWORD = "alice", "correct horse battery"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b""):
    head = [f"HTTP/1.1 {status} Whatever"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    return _parse("\r\n".join(head).encode() + b"\r\n\r\n" + body)


CHALLENGE = answer(401, {"WWW-Authenticate": 'Basic realm="RumiTalk"', "Content-Type": "text/html"}, b"401")
APP = answer(200, {"Content-Type": "text/html; charset=utf-8"}, b"<html>rumitalk</html>")
HEALTH = answer(200, {"Content-Type": "text/plain"}, b"OK")
CANONICAL = {"/health": HEALTH}


def judge(expect: str, response, credentials: str = "none"):
    return _judge(Case("group", "/target", credentials, expect), response, CANONICAL, TOKEN)


@pytest.mark.parametrize("response", [CHALLENGE, answer(400), answer(429, {"Retry-After": "60"})])
def test_a_challenge_is_met_by_a_basic_challenge_or_a_refusal_that_serves_nothing(response):
    assert judge("challenge", response).ok


@pytest.mark.parametrize("response", [APP, answer(404), answer(401, {"WWW-Authenticate": 'Bearer realm="x"'}),
                                      answer(401), answer(403), answer(502)])
def test_anything_else_where_a_challenge_is_due_is_a_bypass(response):
    result = judge("challenge", response)
    assert not result.ok and result.note == "bypass: answered without valid Basic credentials"


def test_the_observed_answer_is_described_by_status_and_content_type():
    assert judge("challenge", CHALLENGE).observed == "401 Basic challenge"
    assert judge("challenge", APP).observed == "200 text/html"
    assert judge("challenge", answer(404)).observed == "404 no body"


def test_right_credentials_must_get_the_apps_answer():
    assert judge("served", APP, "right").ok
    assert judge("served", answer(404, {"Content-Type": "text/html"}), "right").ok  # the app's own answer
    for refused in (CHALLENGE, answer(429), answer(400), answer(502), answer(500)):
        result = judge("served", refused, "right")
        assert not result.ok and result.note == "right credentials did not get through"


def test_an_exempt_path_must_be_answered_by_the_app_without_a_challenge():
    assert judge("exempt", HEALTH).ok and judge("exempt", answer(404)).ok
    asked = judge("exempt", CHALLENGE)
    assert not asked.ok and asked.note == "exempt path asks for Basic credentials (RumiTalk breaks)"
    unreachable = judge("exempt", answer(502))
    assert not unreachable.ok and unreachable.note == "the proxy could not reach the app"


def test_an_open_route_is_reported_not_failed():
    assert judge("report", CHALLENGE).ok and judge("report", CHALLENGE).note == ""
    opened = judge("report", APP)
    assert opened.ok and opened.note == "answers without credentials"


def test_an_odd_spelling_passes_when_stopped_or_answered_exactly_as_its_exempt_path():
    assert judge("same-as:/health", CHALLENGE).ok and judge("same-as:/health", answer(400)).ok
    assert judge("same-as:/health", answer(200, {"Content-Type": "text/plain; charset=utf-8"}, b"OK")).ok
    for other in (APP, answer(200, {"Content-Type": "text/plain"}, b"OK, but another"), answer(404)):
        result = judge("same-as:/health", other)
        assert not result.ok and result.note == "bypass: let through as /health, answered as something else"


@pytest.mark.parametrize("leaking", [
    answer(200, {"Content-Type": "application/json"}, f'{{"authorization": "Basic {TOKEN}"}}'.encode()),
    answer(200, {"X-Seen-Authorization": f"Basic {TOKEN}"}),
    # the credential inside a base64 header value (an upstream that encodes what it saw)
    answer(200, {"X-Seen": base64.b64encode(f"Basic {TOKEN}".encode()).decode()}),
])
@pytest.mark.parametrize("credentials", ["right", "lowercase"])
def test_an_answer_showing_the_basic_credentials_fails_whatever_was_expected(leaking, credentials):
    assert _leaks(leaking, TOKEN)
    for expect in ("served", "exempt"):
        result = judge(expect, leaking, credentials)
        assert not result.ok and result.note == "Basic credentials forwarded to the app"


def test_a_refusal_or_an_answer_without_the_credentials_is_no_leak():
    assert not _leaks(APP, TOKEN)
    assert not _leaks(answer(200, {"X-Odd": "not base64 !!", "X-B64": base64.b64encode(b"other").decode()}), TOKEN)
    # a challenge that quotes the credential serves nothing, so nothing leaked through the proxy
    stopped = answer(401, {"WWW-Authenticate": "Basic realm=x"}, TOKEN.encode())
    assert judge("challenge", stopped, "right").ok
    # without the right credentials sent, an echo cannot show them
    assert judge("exempt", answer(200, body=TOKEN.encode()), "none").ok

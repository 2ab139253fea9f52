"""The auth rules, proven against real nginx in front of the RumiTalk stand-in,
started by testcontainers over plain HTTP and over HTTPS, and by the compose
bundle (conftest.proxy), with verified credentials answered from nginx's cache."""

import base64

import pytest
from web import basic, login, send

PROTECTED = ["/", "/c/new", "/assets/index.js", "/healthz", "/health/", "/health/x",
             "/manifest.webmanifest.bak", "/apix", "/api", "/x/api/"]


@pytest.mark.parametrize("path", PROTECTED)
def test_protected_path_without_credentials_gets_the_basic_challenge(proxy, path):
    answer = send(proxy.port, path)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == f'Basic realm="{proxy.realm}"'
    assert answer.seen is None  # never reached RumiTalk


def _refused_with_the_challenge(proxy, answer) -> None:
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == f'Basic realm="{proxy.realm}"'
    assert answer.seen is None


@pytest.mark.parametrize("path", ["/", "/assets/index.js", "/healthz"])
def test_protected_path_with_wrong_password_is_refused(proxy, path):
    _refused_with_the_challenge(proxy, send(proxy.port, path, headers={"Authorization": basic(proxy.user, "wrong password")}))


def test_unknown_user_is_refused(proxy):
    _refused_with_the_challenge(proxy, send(proxy.port, "/", headers={"Authorization": basic("mallory", proxy.password)}))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("authorization", [
    "Basic",
    "Basic !!!not-base64",
    "Basic " + _b64("alice"),  # no colon
    "Basic " + _b64(":"),
    "Basic " + _b64("alice:"),
    "Digest username=alice",
    "Bearer a-token",  # RumiTalk's scheme: not Basic Auth on a protected path
])
def test_malformed_credentials_are_refused(proxy, authorization):
    _refused_with_the_challenge(proxy, send(proxy.port, "/", headers={"Authorization": authorization}))


@pytest.mark.parametrize("path", ["/", "/c/new", "/assets/index.js", "/healthz"])
def test_protected_path_with_right_credentials_reaches_rumitalk(proxy, path):
    answer = send(proxy.port, path, headers={"Authorization": basic(proxy.user, proxy.password)})
    assert answer.status == 200
    assert answer.seen["path"] == path


def test_a_verified_credential_is_answered_from_the_cache_beyond_the_verification_limits(proxy):
    # verifications are limited to 20 at once per address: these could not
    # all pass if each one ran bcrypt
    alice = {"Authorization": basic(proxy.user, proxy.password)}
    assert [send(proxy.port, "/", headers=alice).status for _ in range(25)] == [200] * 25


def test_basic_credentials_are_not_forwarded_to_rumitalk(proxy):
    answer = send(proxy.port, "/", headers={"Authorization": basic(proxy.user, proxy.password)})
    assert answer.status == 200
    assert answer.seen_header("Authorization") is None


def test_api_without_credentials_gets_rumitalks_own_401(proxy):
    answer = send(proxy.port, "/api/convos")
    assert answer.status == 401
    assert answer.seen["path"] == "/api/convos"
    assert answer.headers.get("WWW-Authenticate") is None  # no Basic prompt in the browser
    assert b"Unauthorized" in answer.body


def test_api_login_reaches_rumitalk_and_bearer_token_gets_its_answer(proxy):
    token = login(proxy.port)
    answer = send(proxy.port, "/api/convos?page=2", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200
    assert answer.seen["path"] == "/api/convos?page=2"
    assert answer.seen_header("Authorization") == f"Bearer {token}"


def test_api_with_an_unknown_bearer_token_gets_rumitalks_401(proxy):
    answer = send(proxy.port, "/api/convos", headers={"Authorization": "Bearer not-a-token"})
    assert answer.status == 401
    assert answer.seen_header("Authorization") == "Bearer not-a-token"


@pytest.mark.parametrize("path, body", [("/health", b"OK"), ("/manifest.webmanifest", b'"name": "RumiTalk"')])
def test_health_and_manifest_answer_without_credentials(proxy, path, body):
    answer = send(proxy.port, path)
    assert answer.status == 200
    assert body in answer.body
    assert answer.seen["path"] == path


def test_forwarding_headers_reach_rumitalk(proxy):
    answer = send(proxy.port, "/health", headers={"Host": "chat.example.com"})
    assert answer.seen_header("Host") == "chat.example.com"
    assert answer.seen_header("X-Forwarded-Proto") == proxy.scheme
    assert answer.seen_header("X-Real-IP")
    assert answer.seen_header("X-Forwarded-For") == answer.seen_header("X-Real-IP")


def test_user_changes_apply_to_cached_credentials_at_once_without_restarting_nginx(proxy):
    started = proxy.nginx_started_at()
    old, new = {"Authorization": basic("bob", "bobs long password")}, {"Authorization": basic("bob", "bobs new password")}
    proxy.add_user("bob", "bobs long password")
    assert [send(proxy.port, "/", headers=old).status for _ in range(2)] == [200, 200]  # the second from the cache

    proxy.set_password("bob", "bobs new password")
    _refused_with_the_challenge(proxy, send(proxy.port, "/", headers=old))
    assert send(proxy.port, "/", headers=new).status == 200

    proxy.delete_user("bob")
    _refused_with_the_challenge(proxy, send(proxy.port, "/", headers=new))
    assert send(proxy.port, "/", headers={"Authorization": basic(proxy.user, proxy.password)}).status == 200
    assert proxy.nginx_started_at() == started

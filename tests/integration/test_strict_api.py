"""Strict API mode against real nginx and the RumiTalk stand-in: /api/ needs
Basic credentials or a Bearer token RumiTalk confirms; refresh and logout
stay open; nothing else reaches RumiTalk."""

from __future__ import annotations

import json
import time

import pytest
from conftest import running_proxy
from web import basic, send

from rumistack.config import load_config
from rumistack.render import render

TOKEN_CACHE = 2


@pytest.fixture(scope="module")
def strict(docker_client, test_images, tmp_path_factory):
    config = load_config("/nonexistent", environ={
        "RUMISTACK_STRICT_API": "true", "RUMISTACK_TOKEN_CACHE_SECONDS": str(TOKEN_CACHE), "RUMISTACK_TLS": "off"})
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), render(config)) as proxy:
        yield proxy


def _basic(proxy) -> dict[str, str]:
    return {"Authorization": basic(proxy.user, proxy.password)}


def _login(proxy, ttl: float = 900) -> tuple[str, str]:
    """Log in as the web app does before it has a token: the browser attaches its Basic credentials.
    Returns the Bearer token and the refresh cookie."""
    answer = send(proxy.port, "/api/auth/login", "POST", {**_basic(proxy), "Content-Type": "application/json"},
                  json.dumps({"email": "user@rumi.test", "password": "stub-password", "ttl": ttl}).encode())
    assert answer.status == 200, answer.body
    return json.loads(answer.body)["token"], answer.headers["Set-Cookie"].split(";")[0]


PUBLIC_ROUTES = [("POST", "/api/auth/register"), ("POST", "/api/auth/login"), ("GET", "/api/config"),
                 ("GET", "/api/banner"), ("POST", "/api/auth/requestPasswordReset"), ("GET", "/api/share/abc")]


@pytest.mark.parametrize("method, path", PUBLIC_ROUTES)
def test_routes_rumitalk_leaves_open_get_the_proxys_401_without_credentials(strict, method, path):
    answer = send(strict.port, path, method, {"Content-Type": "application/json"}, b"{}")
    assert answer.status == 401 and answer.seen is None
    assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize("method, path", PUBLIC_ROUTES)
def test_with_basic_credentials_they_reach_rumitalk_without_the_credentials(strict, method, path):
    answer = send(strict.port, path, method, {**_basic(strict), "Content-Type": "application/json"}, b"{}")
    assert answer.seen is not None and answer.seen["path"] == path
    assert answer.seen_header("Authorization") is None


@pytest.mark.parametrize("path", ["/api/convos", "/api/user", "/api/files/x", "/api/config"])
def test_a_valid_bearer_token_reaches_any_api_route(strict, path):
    token, _ = _login(strict)
    answer = send(strict.port, path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200
    assert answer.seen_header("Authorization") == f"Bearer {token}"


def test_streams_and_uploads_pass_with_a_bearer_token(strict):
    token, _ = _login(strict)
    bearer = {"Authorization": f"Bearer {token}"}
    stream = send(strict.port, "/api/stream?events=3&gap=0.1", headers=bearer)
    assert stream.status == 200 and stream.body.count(b"data: ") == 3
    upload = send(strict.port, "/api/files", "POST", bearer, b"x" * 5_000_000)
    assert upload.status == 200 and json.loads(upload.body)["received"] == 5_000_000


@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "Bearer ", "bearer", "Bearer a b c",
                                           "Token abc", "Basic !!!", "Basic " + "YWxpY2U6d3Jvbmc="])
def test_an_invalid_or_malformed_credential_is_refused_by_the_proxy(strict, authorization):
    answer = send(strict.port, "/api/convos", headers={"Authorization": authorization})
    assert answer.status in (401, 429) and answer.seen is None


def test_an_expired_token_is_refused_but_refresh_still_reaches_rumitalk(strict):
    token, cookie = _login(strict, ttl=1)
    time.sleep(1.5)
    expired = {"Authorization": f"Bearer {token}"}
    assert send(strict.port, "/api/convos", headers=expired).seen is None
    refreshed = send(strict.port, "/api/auth/refresh", "POST", {**expired, "Cookie": cookie})
    assert refreshed.status == 200 and refreshed.seen["path"] == "/api/auth/refresh"
    new_token = json.loads(refreshed.body)["token"]
    assert send(strict.port, "/api/convos", headers={"Authorization": f"Bearer {new_token}"}).status == 200


def test_a_revoked_token_stops_working_within_the_token_cache_time(strict):
    token, cookie = _login(strict)
    bearer = {"Authorization": f"Bearer {token}"}
    assert send(strict.port, "/api/convos", headers=bearer).status == 200  # now cached
    logout = send(strict.port, "/api/auth/logout", "POST", {**bearer, "Cookie": cookie})
    assert logout.status == 200 and logout.seen is not None  # logout stays open
    revoked_at = time.monotonic()
    # while the proxy's yes is cached, RumiTalk itself still refuses the token; after, the proxy does
    while (answer := send(strict.port, "/api/convos", headers=bearer)).seen is not None:
        assert answer.status == 401
        assert time.monotonic() - revoked_at < TOKEN_CACHE + 1.5
        time.sleep(0.1)
    assert answer.status == 401


def test_a_browser_session_in_strict_mode(strict):
    """Page load, login, a chat stream, a token refresh: as the web app does them."""
    page = send(strict.port, "/", headers=_basic(strict))
    config = send(strict.port, "/api/config", headers=_basic(strict))  # before login: cached Basic credentials
    token, cookie = _login(strict, ttl=1)
    stream = send(strict.port, "/api/stream?events=2&gap=0.1", headers={"Authorization": f"Bearer {token}"})
    time.sleep(1.2)
    refresh = send(strict.port, "/api/auth/refresh", "POST", {"Authorization": f"Bearer {token}", "Cookie": cookie})
    token = json.loads(refresh.body)["token"]
    after = send(strict.port, "/api/convos", headers={"Authorization": f"Bearer {token}"})
    seen = [(a.seen["method"], a.seen["path"], a.seen_header("Authorization") or "-")
            for a in (page, config, stream, refresh, after)]
    assert [a.status for a in (page, config, stream, refresh, after)] == [200, 200, 200, 200, 200]
    assert [s[2].split(" ")[0] for s in seen] == ["-", "-", "Bearer", "Bearer", "Bearer"]


def test_check_reports_the_open_api_routes_and_passes_strict_mode(strict, proxy):
    from rumistack.check import OPEN_API_ROUTES, audit

    open_by_default = audit(proxy.url, proxy.user, proxy.password, tls=proxy.tls)
    reported = {r.case.target for r in open_by_default if r.note == "answers without credentials"}
    assert reported == {path for _, path in OPEN_API_ROUTES}
    assert all(r.ok for r in open_by_default)

    strict_results = audit(f"http://127.0.0.1:{strict.port}", strict.user, strict.password, strict=True)
    assert [(r.case.target, r.note) for r in strict_results if not r.ok] == []
    # and a deployment without strict mode fails the strict audit on exactly those routes
    failed = {r.case.target for r in audit(proxy.url, proxy.user, proxy.password, strict=True, tls=proxy.tls)
              if not r.ok}
    assert failed == {path for _, path in OPEN_API_ROUTES} | {"/api/convos", "/api/"}

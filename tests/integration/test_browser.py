"""A real browser (Debian's Chromium, driven by playwright) through rumistack's nginx over HTTPS, its
self-signed certificate trusted (browser.py), in front of the RumiTalk stand-in and its web app, which
behaves as RumiTalk's client does, and the stand-in AI provider behind that: in default and in strict
API mode. What reached the stand-ins is judged by their own request logs.

`site` is parametrized over the stacks: a new one (the compose bundle, once it can give RumiTalk its
settings) needs a param whose proxy has the AI provider behind the stand-in and offers the methods
these tests use beyond conftest.Proxy: stub_requests() and ai_requests()."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid

import pytest
import session_table
from browser import launch, trusting_home
from conftest import REALM, Https, _fresh, running_proxy
from engine import engine_volumes

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the chromium fixture then fails (in CI) or skips each test, saying what is missing
    PlaywrightError = Exception

from rumistack.config import load_config
from rumistack.render import TlsFacts, render

EMAIL, APP_PASSWORD = "user@rumi.test", "stub-password"  # the stand-in's account
PROVIDER_KEY = f"sk-test-browser-{uuid.uuid4().hex[:12]}"
MODES = {"https": {}, "https-strict": {"RUMISTACK_STRICT_API": "true"}}


@pytest.fixture(scope="module", params=[*MODES, "compose"])
def site(request, docker_client, test_images, tmp_path_factory, browser_certificate):
    """rumistack's rendered config (self-signed HTTPS, the default) in front of the stand-in with an
    openAI endpoint at the stand-in provider: started by testcontainers in default or strict API mode,
    or the compose bundle (default mode, its RumiTalk configured by its rumitalk.env)."""
    if request.param == "compose":
        yield request.getfixturevalue("compose_proxy")
        return
    config = load_config("/nonexistent", environ={"RUMISTACK_REALM": REALM, **MODES[request.param]})
    files = render(config, TlsFacts(nginx_version=engine_volumes(docker_client, test_images["nginx"]).nginx_version()))
    with running_proxy(docker_client, test_images, tmp_path_factory.mktemp("state"), files,
                       https=Https(browser_certificate), stub_env={"OPENAI_API_KEY": PROVIDER_KEY},
                       ai=True) as proxy:
        yield _fresh(proxy)


@pytest.fixture(scope="module")
def chromium(playwright_driver, site, tmp_path_factory):
    """Chromium that trusts the site's certificate (an NSS database in its HOME: see browser.py)."""
    launched = launch(playwright_driver, trusting_home(tmp_path_factory.mktemp("browser-home"), site.ca_file))
    yield launched
    launched.close()


def _status(page) -> str:
    return page.evaluate("() => document.body.dataset.status || ''")


def _wait_status(page, *wanted: str) -> str:
    """Wait (playwright's bounded wait) until the app's #status is one of `wanted` or an error."""
    page.wait_for_function("(wanted) => wanted.includes(document.body.dataset.status)", arg=[*wanted, "error"])
    return _status(page)


def _open(page, site, query: str = ""):
    response = page.goto(f"{site.url}/{query}")
    assert response.status == 200, response.status
    assert _wait_status(page, "logged out", "ready") == "logged out", page.text_content("#status")
    return response


def _log_in(page) -> None:
    page.fill("#email", EMAIL)
    page.fill("#password", APP_PASSWORD)
    page.click("#login")
    assert _wait_status(page, "ready", "login failed") == "ready", page.text_content("#status")


def _chat(page, text: str) -> str:
    """Send a message; wait for the whole reply; return the reply as shown."""
    page.fill("#message", text)
    page.click("#send")
    assert _wait_status(page, "reply complete") == "reply complete", page.text_content("#status")
    return page.text_content("#reply")


def _app_log(page) -> list[dict]:
    return page.evaluate("() => window.rumitalk.log")


def _token_expiry(page) -> float:
    token = page.evaluate("() => window.rumitalk.token")
    claims = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["exp"]


def _credentials(site) -> tuple[str, str]:
    return site.user, site.password


def test_the_whole_flow_load_login_streamed_reply_refresh_logout(site, new_page):
    page = new_page(_credentials(site))  # the Basic prompt, answered once
    _open(page, site, "?ttl=2")  # the stand-in's test knob: tokens expiring after 2 s
    before_login = _app_log(page)
    # before login: the config and a refresh attempt, with no Authorization header of the app's own
    assert [(e["method"], e["path"], e["bearer"]) for e in before_login] == [
        ("GET", "/api/config", False), ("POST", "/api/auth/refresh", False)]
    assert [e["status"] for e in before_login] == [200, 200]
    _log_in(page)
    assert page.is_visible("#chat") and not page.is_visible("#login-form")
    assert page.text_content("#user") == EMAIL and page.text_content("#endpoint") == "openAI"
    assert _chat(page, "hello from a browser") == "Stand-in reply to: hello from a browser"

    # the token expires; the next call gets 401, refreshes once and is retried
    expires = _token_expiry(page)
    for _ in range(50):  # at most 5 s: the token lives 2 s
        if time.time() > expires + 0.2:
            break
        time.sleep(0.1)
    mark = len(_app_log(page))
    assert _chat(page, "and after the refresh") == "Stand-in reply to: and after the refresh"
    calls = [(e["method"], e["path"].split("?")[0], e["status"]) for e in _app_log(page)[mark:]]
    assert calls[:3] == [("POST", "/api/agents/chat/openAI", 401), ("POST", "/api/auth/refresh", 200),
                         ("POST", "/api/agents/chat/openAI", 200)]
    # then the stream (resumed if the connection broke: Chromium drops connections when Docker adds a network)
    stream = "/api/agents/chat/stream/" + page.get_attribute("#reply", "data-stream-id")
    assert [c[:2] for c in calls[3:]] == [("GET", stream)] * len(calls[3:]) and calls[-1][2] == 200

    # the provider got the key from the stand-in's settings, and the model RumiTalk asked for
    asked = [r for r in site.ai_requests() if r["path"] == "/v1/chat/completions"]
    assert len(asked) >= 2 and {(r["key"], r["model"]) for r in asked} == {(site.provider_key, "gpt-4o-mini")}

    page.click("#logout")
    assert _wait_status(page, "logged out") == "logged out"
    assert page.is_visible("#login-form") and not page.is_visible("#chat")
    # the session is over on the server too: a reload finds no session to refresh
    page.reload()
    assert _wait_status(page, "logged out", "ready") == "logged out"


def test_the_reply_streams_token_by_token_onto_the_page(site, new_page):
    page = new_page(_credentials(site))
    _open(page, site)
    _log_in(page)
    text = "one two three four five six"
    assert _chat(page, text) == f"Stand-in reply to: {text}"
    tokens = page.eval_on_selector_all("#reply .token", """spans => spans.map(s => ({
        text: s.textContent, arrived: Number(s.dataset.arrived) / 1000, provider_sent: Number(s.dataset.providerSent)}))""")
    assert "".join(t["text"] for t in tokens) == f"Stand-in reply to: {text}" and len(tokens) == 9
    # the first token was on the page before the provider sent the last one
    assert tokens[0]["arrived"] < tokens[-1]["provider_sent"]
    assert [t["arrived"] for t in tokens] == sorted(t["arrived"] for t in tokens)


def test_rumitalk_never_receives_basic_credentials(site, new_page):
    before = len(site.stub_requests())
    page = new_page(_credentials(site))
    _open(page, site)
    _log_in(page)
    _chat(page, "no credentials past the door")
    seen = site.stub_requests()[before:]
    paths = {r["path"].split("?")[0] for r in seen}
    assert {"/", "/api/config", "/api/auth/login", "/api/endpoints", "/api/agents/chat/openAI"} <= paths
    authorizations = [v for r in seen for k, v in r["headers"] if k.lower() == "authorization"]
    assert authorizations and all(v.startswith("Bearer ") for v in authorizations)


def test_the_manifest_and_its_icons_load(site, new_page):
    page = new_page(_credentials(site))
    _open(page, site)
    assert page.get_attribute("link[rel=manifest]", "crossorigin") == "use-credentials"
    # the manifest as the browser fetches and parses it for the page
    manifest = page.context.new_cdp_session(page).send("Page.getAppManifest")
    assert manifest["url"] == f"{site.url}/manifest.webmanifest" and manifest["errors"] == []
    icons = json.loads(manifest["data"])["icons"]
    assert {i["src"] for i in icons} >= {"/assets/icon-192x192.png", "/assets/maskable-icon.png",
                                        "/assets/apple-touch-icon-180x180.png", "/assets/favicon-32x32.png"}
    for icon in icons:  # each one loads, is a PNG and decodes to the size the manifest says
        status, kind, width, height = page.evaluate("""async (src) => {
            const answer = await fetch(src);
            const image = await createImageBitmap(await answer.blob());
            return [answer.status, answer.headers.get('content-type'), image.width, image.height];
        }""", icon["src"])
        assert (status, kind, f"{width}x{height}") == (200, "image/png", icon["sizes"]), icon


def test_the_service_worker_registers_and_a_reload_through_it_works(site, new_page):
    page = new_page(_credentials(site))
    _open(page, site)
    assert page.evaluate("async () => (await navigator.serviceWorker.ready).scope") == f"{site.url}/"
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    before = len(site.stub_requests())
    response = page.reload()
    assert response.from_service_worker and response.status == 200
    assert _wait_status(page, "logged out", "ready") == "logged out"
    _log_in(page)
    assert _chat(page, "after a reload") == "Stand-in reply to: after a reload"
    paths = [r["path"] for r in site.stub_requests()[before:]]
    assert "/" in paths  # the navigation went on to the network, through nginx
    assert "/assets/index.js" not in paths  # the app's script came from the worker's cache


def test_a_wrong_password_reaches_nothing_and_the_page_shows_the_401(site, new_page):
    before = len(site.stub_requests())
    page = new_page((site.user, "not the password"))
    for path in ("/", "/c/new", "/assets/index.js"):
        response = page.goto(f"{site.url}{path}")
        assert response.status == 401
        assert response.headers["www-authenticate"] == f'Basic realm="{site.realm}"'
        assert "401" in page.text_content("body")
    assert len(site.stub_requests()) == before


def test_after_the_user_is_deleted_their_next_navigation_is_refused(site, new_page):
    name = f"carol-{uuid.uuid4().hex[:6]}"
    site.add_user(name, "carols long password")
    page = new_page((name, "carols long password"))
    _open(page, site)
    _log_in(page)
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    site.delete_user(name)
    before = len(site.stub_requests())
    response = page.reload()
    assert response.status == 401
    assert "401" in page.text_content("body")
    assert [r["path"] for r in site.stub_requests()[before:]] == []


@pytest.mark.parametrize("site", ["https"], indirect=True)  # the browser's trust, shown once
def test_the_certificate_is_verified_not_ignored(site, new_page, playwright_driver, tmp_path):
    # the browser that trusts it still checks the name: the certificate is for 127.0.0.1 and rumi.test
    page = new_page(_credentials(site))
    with pytest.raises(PlaywrightError, match="ERR_CERT_COMMON_NAME_INVALID"):
        page.goto(f"https://localhost:{int(site.port)}/")
    # and a browser that does not trust it refuses the site
    untrusting = launch(playwright_driver, tmp_path)
    try:
        with pytest.raises(PlaywrightError, match="ERR_CERT_AUTHORITY_INVALID"):
            untrusting.new_page().goto(f"{site.url}/")
    finally:
        untrusting.close()


@pytest.mark.parametrize("site", ["https-strict"], indirect=True)
def test_the_docs_table_of_a_strict_session_is_what_a_browser_and_rumitalk_exchanged(site, new_page):
    """docs/auth.md's table, from this run; RUMISTACK_WRITE_DOCS=1 writes it (CONTRIBUTING.md)."""
    page = new_page(_credentials(site))
    recorder = session_table.Recorder(page)
    before = len(site.stub_requests())
    _open(page, site, "?ttl=2")
    _log_in(page)
    _chat(page, "a first message")
    expires = _token_expiry(page)
    while time.time() < expires + 0.2:  # at most the token's 2 s
        time.sleep(0.1)
    _chat(page, "after the token expired")
    table = session_table.rows(recorder.sent(), site.stub_requests()[before:])
    if os.environ.get("RUMISTACK_WRITE_DOCS") == "1":
        session_table.write(table)
    assert session_table.committed() == "\n".join(table) + "\n"

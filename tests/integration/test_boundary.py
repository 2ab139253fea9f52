"""The auth boundary, request by request: raw request targets (sent exactly
as written) against real nginx with rumistack's config and the RumiTalk
stand-in, which reports what reached it.

Each row names what the target must be treated as:
- protected: Basic Auth guards it (a wrong password gets the challenge, or
  429 once the verification limits are reached); with the right credentials
  the app gets the target as the client sent it;
- rejected: nginx refuses the request (400) and nothing reaches the app;
- health / manifest / api: exempt, and the app sees exactly the normalised
  path given (never a spelling it would route elsewhere).
"""

from __future__ import annotations

import pytest
from web import basic, login, send

ROWS: list[tuple[str, str, str | None]] = [
    # target, treated as, path the app sees when exempt
    ("/", "protected", None),
    ("/c/new", "protected", None),
    ("/assets/index.js", "protected", None),
    ("/index.html", "protected", None),
    ("/healthz", "protected", None),
    ("/health/", "protected", None),
    ("/health/x", "protected", None),
    ("/health.json", "protected", None),
    ("/x/health", "protected", None),
    ("/HEALTH", "protected", None),
    ("/health;x", "protected", None),
    ("/health%20", "protected", None),
    ("/health%3Fx", "protected", None),
    ("/health%2F", "protected", None),
    ("/health%23x", "protected", None),
    ("/health/.", "protected", None),
    ("/health/..", "protected", None),
    ("/manifest.webmanifest.bak", "protected", None),
    ("/manifest.webmanifest/", "protected", None),
    ("/manifest.webmanifest;x", "protected", None),
    ("/Manifest.webmanifest", "protected", None),
    ("/apix", "protected", None),
    ("/api", "protected", None),
    ("/API/convos", "protected", None),
    ("/x/api/", "protected", None),
    ("/x/api/convos", "protected", None),
    ("/api/../index.html", "protected", None),
    ("/api/..%2Findex.html", "protected", None),
    ("/api/%2e%2e/index.html", "protected", None),
    ("/api/%2E%2E/convos", "protected", None),
    ("/health/../index.html", "protected", None),
    ("/manifest.webmanifest/../index.html", "protected", None),
    ("/%2e%2e/index.html", "rejected", None),
    ("/../health", "rejected", None),
    ("/health%00", "rejected", None),
    ("/api/convos%00", "rejected", None),
    ("/manifest.webmanifest%00", "rejected", None),
    ("/health", "health", "/health"),
    ("/health?probe=1", "health", "/health?probe=1"),
    ("/%68ealth", "health", "/health"),
    ("/%68%65%61%6c%74%68", "health", "/health"),
    ("//health", "health", "/health"),
    ("/./health", "health", "/health"),
    ("/x/../health", "health", "/health"),
    ("/api/../health", "health", "/health"),
    ("/heal%74h?x=%2F", "health", "/health?x=%2F"),
    ("/manifest.webmanifest", "manifest", "/manifest.webmanifest"),
    ("/manifest%2Ewebmanifest", "manifest", "/manifest.webmanifest"),
    ("//manifest.webmanifest", "manifest", "/manifest.webmanifest"),
    ("/x/../manifest.webmanifest", "manifest", "/manifest.webmanifest"),
    ("/api/convos", "api", "/api/convos"),
    ("/api/", "api", "/api/"),
    ("/api/convos?page=2&q=a%20b", "api", "/api/convos?page=2&q=a%20b"),
    ("/%61pi/convos", "api", "/api/convos"),
    ("/api%2Fconvos", "api", "/api/convos"),
    ("//api/convos", "api", "/api/convos"),
    ("/api//convos", "api", "/api/convos"),
    ("/api/./convos", "api", "/api/convos"),
    ("/api/x/../convos", "api", "/api/convos"),
    ("/api/..%2Fapi/convos", "api", "/api/convos"),
    ("/api/convos;x", "api", "/api/convos;x"),
    ("/api/files/a%20b", "api", "/api/files/a%20b"),
]

CREDENTIALS = ["none", "wrong", "right"]


def _headers(form: str, proxy) -> dict[str, str]:
    if form == "none":
        return {}
    return {"Authorization": basic(proxy.user, proxy.password if form == "right" else "wrong password")}


@pytest.mark.parametrize("credentials", CREDENTIALS)
@pytest.mark.parametrize("target, treated_as, app_path", ROWS, ids=[r[0] for r in ROWS])
def test_request_reaches_rumitalk_only_as_authorised(proxy, target, treated_as, app_path, credentials):
    response = send(proxy.port, target, headers=_headers(credentials, proxy))
    seen = response.seen

    if treated_as == "rejected":
        assert response.status == 400 and seen is None
    elif treated_as == "protected" and credentials == "wrong" and response.status == 429:
        # the verification limits: after the first 20 failures from one address,
        # refused before any bcrypt (the right credential is cached: it passes)
        assert seen is None and response.headers["Retry-After"] == "60"
    elif treated_as == "protected" and credentials != "right":
        assert response.status == 401 and seen is None
        assert response.headers["WWW-Authenticate"] == f'Basic realm="{proxy.realm}"'
    elif treated_as == "protected":
        assert seen is not None and seen["path"] == target  # forwarded as the client sent it
    else:
        assert seen is not None, response.status
        assert seen["path"] == app_path
        assert response.headers.get("WWW-Authenticate") is None

    # credentials stay at the door, whatever the path
    if seen is not None:
        assert response.seen_header("Authorization") is None


@pytest.mark.parametrize("target", ["/api/convos", "/%61pi/convos", "/api/stream?events=1&gap=0"])
def test_bearer_token_reaches_rumitalk_untouched_on_api(proxy, target):
    token = login(proxy.port)
    for scheme in ("Bearer", "bearer"):
        response = send(proxy.port, target, headers={"Authorization": f"{scheme} {token}"})
        assert response.status == 200
        assert response.seen_header("Authorization") == f"{scheme} {token}"

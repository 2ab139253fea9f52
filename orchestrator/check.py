"""`rumistack check`: audit a running deployment from outside, ours or any
hand-written one, with real requests.

Each case is a request target, a credential form and an expectation:
- challenge: Basic Auth must stop it (401 with a Basic challenge; a 400 or
  429 from the proxy also serves nothing);
- served: right credentials get the app's answer;
- exempt: the app answers without Basic credentials;
- same-as P: an odd spelling of an exempt path P must be stopped, or be
  answered exactly as P is; any other answer means the proxy let it through
  as P while the app saw something else (a bypass).

Every request that carries the right Basic credentials is also checked for
a leak: if the answer shows the credentials (as an echoing upstream such as
rumistack's RumiTalk stand-in does), the proxy forwarded them.

RumiTalk answers some API routes without any token (login, registration,
password reset, its config, banner and shared links). The audit reports
which of them answer without credentials; with `strict` (rumistack's strict
API mode) they must be stopped, and /api/ needs credentials, while token
refresh and logout stay reachable.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from dataclasses import dataclass

from .errors import RumistackError
from .exemptions import BUILTIN, STRICT_OPEN
from .probe import ProbeError, Response, request

CREDENTIALS = ("none", "wrong", "malformed", "no-colon", "right", "lowercase", "bearer")


@dataclass(frozen=True)
class Case:
    group: str
    target: str
    credentials: str
    expect: str  # "challenge", "served", "exempt", "report", or "same-as:<path>"
    method: str = "GET"


# api routes rumitalk answers without a token
OPEN_API_ROUTES = (("POST", "/api/auth/login"), ("POST", "/api/auth/register"),
                   ("POST", "/api/auth/requestPasswordReset"), ("GET", "/api/config"), ("GET", "/api/banner"),
                   ("GET", "/api/share/rumistack-check"))
# what strict mode leaves open: rumitalk's token refresh and logout, both POST routes
STRICT_OPEN_ROUTES = tuple(("POST", e.path) for e in STRICT_OPEN)
# the built-in exact exemptions, asked for plainly and with a query
EXEMPT_TARGETS = tuple(t for e in BUILTIN if e.exact for t in (e.path, f"{e.path}?probe=1"))


@dataclass(frozen=True)
class Result:
    case: Case
    observed: str
    ok: bool
    note: str = ""


class CheckError(RumistackError):
    """The deployment could not be audited."""


def cases(strict: bool = False) -> list[Case]:
    out = []
    for target in ("/", "/c/new", "/assets/index.js", "/index.html", "/robots.txt"):
        out.append(Case("protected", target, "none", "challenge"))
    for target in ("/healthz", "/health/", "/health/x", "/health.json", "/healthcheck", "/x/health",
                   "/manifest.webmanifest.bak", "/manifest.webmanifest/", "/manifest.webmanifestx",
                   "/apix", "/api", "/x/api/", "/x/api/convos"):
        out.append(Case("near-miss", target, "none", "challenge"))
    for target in EXEMPT_TARGETS:
        out.append(Case("exempt", target, "none", "exempt"))
    for target in ("/api/convos", "/api/"):
        out.append(Case("api", target, "none", "challenge" if strict else "exempt"))
    for method, target in OPEN_API_ROUTES:
        out.append(Case("api-open", target, "none", "challenge" if strict else "report", method))
    if strict:
        out += [Case("api-open", target, "none", "exempt", method) for method, target in STRICT_OPEN_ROUTES]
    spellings = {
        "/health": ("/%68ealth", "/%68%65%61%6c%74%68", "//health", "/./health", "/x/../health", "/api/../health",
                    "/health;x", "/health%00", "/health%20", "/health%3Fx", "/health/.", "/health%2F", "/HEALTH",
                    "/health%23x", "/health/..", "/heal%74h?x=1"),
        "/manifest.webmanifest": ("/manifest%2Ewebmanifest", "//manifest.webmanifest", "/x/../manifest.webmanifest",
                                  "/manifest.webmanifest;x", "/manifest.webmanifest%00", "/Manifest.webmanifest"),
        "/api/convos": ("/%61pi/convos", "/api%2Fconvos", "//api/convos", "/api/./convos", "/api/x/../convos",
                        "/API/convos", "/api//convos", "/api/convos;x", "/api/%2e%2e/convos", "/api/..%2Fapi/convos"),
        "/": ("/api/..%2Findex.html", "/api/%2e%2e/index.html", "/api/../index.html", "/health/../index.html",
              "/manifest.webmanifest/../index.html", "/%2e%2e/index.html"),
    }
    for canonical, targets in spellings.items():
        expect = "challenge" if canonical == "/" else f"same-as:{canonical}"
        out += [Case("spelling", t, "none", expect) for t in targets]
    for credentials in ("wrong", "malformed", "no-colon", "bearer"):
        out.append(Case("credentials", "/", credentials, "challenge"))
    for credentials in ("right", "lowercase"):
        out.append(Case("credentials", "/", credentials, "served"))
    for target in ("/api/convos", "/health"):
        out.append(Case("credentials", target, "right", "exempt"))
    out.append(Case("credentials", "/api/convos", "bearer", "exempt"))
    return out


def _authorization(form: str, user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {
        "none": {},
        "wrong": {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}-wrong".encode()).decode()},
        "malformed": {"Authorization": "Basic !!!not-base64!!!"},
        "no-colon": {"Authorization": "Basic " + base64.b64encode(user.encode()).decode()},
        "right": {"Authorization": "Basic " + token},
        "lowercase": {"Authorization": "basic " + token},
        "bearer": {"Authorization": "Bearer rumistack-check-not-a-token"},
    }[form]


def _challenged(response: Response) -> bool:
    return response.status == 401 and response.headers.get("WWW-Authenticate", "").lower().startswith("basic")


def _stopped(response: Response) -> bool:
    return _challenged(response) or response.status in (400, 429)


def _describe(response: Response) -> str:
    if _challenged(response):
        return "401 Basic challenge"
    kind = response.headers.get("Content-Type", "").split(";")[0] or "no body"
    return f"{response.status} {kind}"


def _signature(response: Response) -> tuple:
    return response.status, response.headers.get("Content-Type", "").split(";")[0], response.body


def _leaks(response: Response, token: str) -> bool:
    """True if the answer shows the Basic credentials, plainly or inside a base64 header value."""
    if token.encode() in response.body:
        return True
    for value in response.headers.values():
        if token in value:
            return True
        try:
            if token.encode() in base64.b64decode(value, validate=True):
                return True
        except (binascii.Error, ValueError):
            pass
    return False


def _judge(case: Case, response: Response, canonical: dict[str, Response], token: str) -> Result:
    observed = _describe(response)
    if case.credentials in ("right", "lowercase") and not _stopped(response) and _leaks(response, token):
        return Result(case, observed, False, "Basic credentials forwarded to the app")
    if case.expect == "challenge":
        if _stopped(response):
            return Result(case, observed, True)
        return Result(case, observed, False, "bypass: answered without valid Basic credentials")
    if case.expect == "served":
        if _stopped(response) or response.status >= 500:
            return Result(case, observed, False, "right credentials did not get through")
        return Result(case, observed, True)
    if case.expect == "report":
        return Result(case, observed, True, "" if _stopped(response) else "answers without credentials")
    if case.expect == "exempt":
        if _challenged(response):
            return Result(case, observed, False, "exempt path asks for Basic credentials (RumiTalk breaks)")
        if response.status >= 500:
            return Result(case, observed, False, "the proxy could not reach the app")
        return Result(case, observed, True)
    path = case.expect.removeprefix("same-as:")
    if _stopped(response) or _signature(response) == _signature(canonical[path]):
        return Result(case, observed, True)
    return Result(case, observed, False, f"bypass: let through as {path}, answered as something else")


def audit(base_url: str, user: str, password: str, *, strict: bool = False,
          tls: ssl.SSLContext | None = None) -> list[Result]:
    """Run every case against the deployment at `base_url`; `strict`: expect strict API mode.
    Over HTTPS `tls` checks the certificate (default: the system's CAs)."""
    base_url = base_url.rstrip("/")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        canonical = {p: request(base_url, p, tls=tls) for p in ("/health", "/manifest.webmanifest", "/api/convos")}
        results = []
        for case in cases(strict):
            headers = _authorization(case.credentials, user, password)
            if case.method == "POST":
                headers["Content-Type"] = "application/json"
            response = request(base_url, case.target, case.method, headers, b"{}" if case.method == "POST" else b"",
                               tls=tls)
            results.append(_judge(case, response, canonical, token))
    except ProbeError as exc:
        raise CheckError(str(exc)) from None
    return results

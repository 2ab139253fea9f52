"""What a real browser sent in a session and what RumiTalk saw of each
request, as the table docs/auth.md shows (between MARKERS): the browser's
side from Chromium's own record of each request (playwright's
all_headers, with the Basic credentials it attached from its cache), the
RumiTalk stand-in's side from its request log."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DOCS = Path(__file__).parents[2] / "docs" / "auth.md"
START, END = "<!-- browser-session:start -->", "<!-- browser-session:end -->"
_BLOCK = re.compile(rf"({re.escape(START)}\n).*?({re.escape(END)})", re.S)
_STREAM = re.compile(r"^/api/agents/chat/stream/[^/?]+")


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    authorization: str  # as the browser sent it
    status: int  # nginx's answer
    navigation: bool


class Recorder:
    """The page's requests to /api/ and its navigations, in the order the browser sent them."""

    def __init__(self, page) -> None:
        self._requests = []
        page.on("request", self._sent)

    def _sent(self, request) -> None:
        if urlsplit(request.url).path.startswith("/api/") or request.is_navigation_request():
            self._requests.append(request)

    def sent(self) -> list[Sent]:
        out = []
        for request in self._requests:
            response = request.response()
            out.append(Sent(request.method, urlsplit(request.url).path, request.all_headers().get("authorization", ""),
                            response.status if response else 0, request.is_navigation_request()))
        return out


def _credential(value: str, request: Sent | None = None) -> str:
    """A credential as the table shows it: its kind, and a token's (stable) start."""
    if not value and request is not None and request.navigation and request.status == 200:
        # Chromium reports the first try, which nginx answered with its challenge
        return "the Basic credentials typed into the prompt, after nginx's 401"
    if not value:
        return "no Authorization"
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "basic":
        return "cached Basic credentials"
    return f"`Bearer {token[:10]}…`"


def _path(path: str) -> str:
    return _STREAM.sub("/api/agents/chat/stream/<id>", path)


def _header(record: dict, name: str) -> str:
    return next((v for k, v in record["headers"] if k.lower() == name), "")


def _is_check(record: dict) -> bool:
    """nginx's own question about a Bearer token (strict API mode): it forwards nothing of the client's
    request but the token, so no X-Real-IP."""
    return urlsplit(record["path"]).path == "/api/user" and not _header(record, "x-real-ip")


def rows(sent: list[Sent], seen: list[dict]) -> list[str]:
    """One table row per request the browser sent (consecutive repeats, such as a resumed stream, once),
    with what reached RumiTalk for it: nothing, or the request and the Authorization it carried, after
    the check nginx made of a Bearer token it had not confirmed yet (strict API mode)."""
    out: list[str] = []
    cursor = 0
    for request in sent:
        reached = "nothing (the proxy answered)"
        for index in range(cursor, len(seen)):
            record = seen[index]
            if not _is_check(record) and (record["method"], urlsplit(record["path"]).path) == (request.method,
                                                                                               request.path):
                authorization = _header(record, "authorization")
                checks = [r for r in seen[cursor:index] if _is_check(r)]
                check = "nginx's check `GET /api/user` with the token, then " if checks else ""
                reached = f"{check}`{request.method} {_path(request.path)}`, {_credential(authorization)}"
                cursor = index + 1
                break
        row = (f"| `{request.method} {_path(request.path)}` | {_credential(request.authorization, request)} | "
               f"{request.status} | {reached} |")
        if not out or out[-1] != row:
            out.append(row)
    return ["| the browser sends | with | nginx answers | RumiTalk sees |", "|---|---|---|---|", *out]


def committed() -> str:
    match = _BLOCK.search(DOCS.read_text())
    assert match, f"{DOCS} has no {START} ... {END} block"
    return match[0][len(START) + 1:-len(END)]


def write(table: list[str]) -> None:
    DOCS.write_text(_BLOCK.sub(lambda m: m[1] + "\n".join(table) + "\n" + m[2], DOCS.read_text()))

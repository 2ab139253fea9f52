"""The paths that skip Basic Auth: the built-in ones, the optional ones, and
the self-hoster's own. This is the one list; nginx.conf renders a commented
location for each.

In strict API mode (RUMISTACK_STRICT_API) /api/ is no longer exempt: it
needs Basic credentials or a Bearer token that RumiTalk itself confirms
(`token`), and only the routes in STRICT_OPEN stay open."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Match(Enum):
    """How an exemption's path matches a request: each kind is one nginx location modifier."""

    EXACT = "="  # the path itself, nothing more
    PREFIX = "^~"  # the path and everything below it; no regex location can take it over

    @property
    def modifier(self) -> str:
        return self.value


@dataclass(frozen=True)
class Exemption:
    path: str  # a prefix ends with "/"
    match: Match
    why: str
    streams: bool = False  # answers may be long-lived streams (server-sent events)
    token: bool = False  # strict mode: basic credentials, or a bearer token rumitalk confirms

    @property
    def exact(self) -> bool:
        return self.match is Match.EXACT


BUILTIN: tuple[Exemption, ...] = (
    Exemption("/api/", Match.PREFIX, "rumitalk's api: its own bearer-token auth guards it", streams=True),
    Exemption("/manifest.webmanifest", Match.EXACT, "browsers fetch the manifest without credentials"),
    Exemption("/health", Match.EXACT, "health checks; safari re-prompts for credentials here"),
)
STRICT_API = Exemption(
    "/api/", Match.PREFIX, "rumitalk's api, strict mode: basic credentials, or a bearer token rumitalk confirms",
    streams=True, token=True)
# the api routes strict mode leaves open, each with its reason
STRICT_OPEN: tuple[Exemption, ...] = (
    Exemption("/api/auth/refresh", Match.EXACT,
              "token refresh: rumitalk's httponly refresh cookie guards it, and an expired bearer token "
              "must not lock the user out"),
    Exemption("/api/auth/logout", Match.EXACT, "logout: ending a session never needs more than the session"),
)
OAUTH = Exemption("/oauth/", Match.PREFIX, "social login: the provider redirects here without basic credentials (RUMISTACK_EXEMPT_OAUTH)")

# path segments of unreserved characters only: nothing nginx or a browser
# would decode, and nothing that could end a directive
_SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.\.[A-Za-z0-9._~-]+"
_EXACT = re.compile(rf"(?:/(?:{_SEGMENT}))+")
_PREFIX = re.compile(rf"(?:/(?:{_SEGMENT}))+/\*")


def parse_extra(value: str) -> tuple[Exemption, ...]:
    """Parse RUMISTACK_EXEMPT_PATHS: comma-separated, `/exact/path` or `/prefix/*`."""
    result = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        if _PREFIX.fullmatch(entry):
            result.append(Exemption(entry[:-1], Match.PREFIX, "listed in RUMISTACK_EXEMPT_PATHS"))
        elif _EXACT.fullmatch(entry):
            result.append(Exemption(entry, Match.EXACT, "listed in RUMISTACK_EXEMPT_PATHS"))
        else:
            raise ValueError(
                f"{entry!r} is neither an exact path (/robots.txt) nor a prefix (/public/*); use letters, "
                "digits and . _ ~ - between slashes, with no empty, '.' or '..' segments"
            )
    return tuple(result)


def exemptions(oauth: bool, extra: tuple[Exemption, ...], strict_api: bool = False) -> tuple[Exemption, ...]:
    """Every exemption in force; raises ValueError on a path listed twice."""
    builtin = tuple(STRICT_API if e.path == "/api/" else e for e in BUILTIN) + STRICT_OPEN if strict_api else BUILTIN
    chosen = builtin + ((OAUTH,) if oauth else ()) + extra
    seen: set[str] = set()
    for exemption in chosen:
        if exemption.path in seen:
            raise ValueError(f"{exemption.path} is exempt already")
        seen.add(exemption.path)
    return chosen


def summary(chosen: tuple[Exemption, ...] = BUILTIN) -> str:
    """The exempt paths in words, for help texts: "/api/, /manifest.webmanifest and /health"."""
    paths = [e.path for e in chosen]
    return ", ".join(paths[:-1]) + f" and {paths[-1]}" if len(paths) > 1 else "".join(paths)

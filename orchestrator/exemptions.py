"""The paths that skip Basic Auth: the built-in ones, the optional ones, and
the self-hoster's own. This is the one list; nginx.conf renders a commented
location for each."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Exemption:
    path: str  # a prefix ends with "/"
    exact: bool
    why: str
    streams: bool = False  # answers may be long-lived streams (server-sent events)


BUILTIN: tuple[Exemption, ...] = (
    Exemption("/api/", False, "rumitalk's api: its own bearer-token auth guards it", streams=True),
    Exemption("/manifest.webmanifest", True, "browsers fetch the manifest without credentials"),
    Exemption("/health", True, "health checks; safari re-prompts for credentials here"),
)
OAUTH = Exemption("/oauth/", False, "social login: the provider redirects here without basic credentials (RUMISTACK_EXEMPT_OAUTH)")

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
            result.append(Exemption(entry[:-1], False, "listed in RUMISTACK_EXEMPT_PATHS"))
        elif _EXACT.fullmatch(entry):
            result.append(Exemption(entry, True, "listed in RUMISTACK_EXEMPT_PATHS"))
        else:
            raise ValueError(
                f"{entry!r} is neither an exact path (/robots.txt) nor a prefix (/public/*); use letters, "
                "digits and . _ ~ - between slashes, with no empty, '.' or '..' segments"
            )
    return tuple(result)


def exemptions(oauth: bool, extra: tuple[Exemption, ...]) -> tuple[Exemption, ...]:
    """Every exemption in force; raises ValueError on a path listed twice."""
    chosen = BUILTIN + ((OAUTH,) if oauth else ()) + extra
    seen: set[str] = set()
    for exemption in chosen:
        if exemption.path in seen:
            raise ValueError(f"{exemption.path} is exempt already")
        seen.add(exemption.path)
    return chosen

"""The generated part of the docs: the table of every configuration key in
docs/configuration.md, between the markers START and END.

Each row is a key of config.KEYS, its default, and its description: the
comment lines right above the key in .env.example (a comment block followed
by a blank line heads a group and belongs to no key). So a key is described
once, in .env.example, and a test fails when the committed table is stale.
Regenerate it from the checkout's root with `python -m rumistack.docs`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .config import KEYS

FILE = Path("docs/configuration.md")  # from the checkout's root
ENV_EXAMPLE = Path(".env.example")
START, END = "<!-- keys:start -->", "<!-- keys:end -->"
_BLOCK = re.compile(rf"({re.escape(START)}\n).*?({re.escape(END)})", re.S)
_KEY = re.compile(r"(?<![`\w])RUMI(?:STACK|TALK)_[A-Z0-9_]+(?:=[\w.-]+)?(?![`\w])")  # a key, or key=value
_PAGE = re.compile(r"\bdocs/([a-z0-9-]+\.md)\b")  # a page of docs/, from .env.example's point of view


def descriptions(env_example: str) -> dict[str, str]:
    """Each key of `env_example` (the text of .env.example) and the comment lines right above it, as one line."""
    found: dict[str, str] = {}
    comment: list[str] = []
    for line in env_example.splitlines():
        if line.startswith("#"):
            comment.append(line.removeprefix("#").strip())
        elif "=" in line and not line[0].isspace():
            found[line.split("=", 1)[0]] = " ".join(comment)
            comment = []
        else:  # a blank line ends a group's heading
            comment = []
    return found


def _cell(text: str) -> str:
    """A comment as a table cell of docs/configuration.md: keys as code, pages as links."""
    text = _KEY.sub(lambda m: f"`{m[0]}`", text)
    return _PAGE.sub(r"[\1](\1)", text).replace("|", r"\|")


def keys_table(env_example: str) -> str:
    """The markdown table of every key of config.KEYS: name, default, description."""
    described = descriptions(env_example)
    missing = [key.name for key in KEYS if not described.get(key.name)]
    if missing:
        raise ValueError(f"{ENV_EXAMPLE} has no comment right above {', '.join(missing)}")
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in KEYS:
        default = f"`{key.default}`" if key.default else "(none)"
        rows.append(f"| `{key.name}` | {default} | {_cell(described[key.name])} |")
    return "\n".join(rows) + "\n"


def rewrite(page: str, table: str) -> str:
    """`page` with `table` between its markers."""
    if not _BLOCK.search(page):
        raise ValueError(f"{FILE} has no {START} ... {END} block")
    return _BLOCK.sub(lambda m: m[1] + table + m[2], page)


def main(argv: list[str]) -> None:
    root = Path(argv[0]) if argv else Path(".")
    page = root / FILE
    page.write_text(rewrite(page.read_text(), keys_table((root / ENV_EXAMPLE).read_text())))
    print(f"wrote the table of keys in {page}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

"""The rendered nginx configuration, read the way nginx reads it.

`read` renders the files into a temporary directory laid out as the config
volume is in the nginx container (rumistack.render.CONF_DIR), and parses
each one with crossplane, NGINX's own config parser. The tests then ask for
directives and blocks, as certbot's nginx plugin does, instead of slicing
text: a reordered comment or an extra space cannot fool them, and a
directive moved into another block cannot slip past them.

A parsed block is crossplane's: a list of statements, each a dict with
"directive", "args", "line", and "block" (for block directives) or
"comment" (for comments, whose directive is "#").
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import crossplane

from rumistack.config import Config
from rumistack.layout import CONF_DIR, MAIN_FILE
from rumistack.render import TlsFacts, render

Block = list[dict]


@dataclass(frozen=True)
class Rendered:
    """The rendered files, as text and parsed, by their path relative to CONF_DIR."""

    files: dict[str, str]
    parsed: dict[str, Block]

    @property
    def main(self) -> Block:
        return self.parsed[MAIN_FILE]

    @property
    def http(self) -> Block:
        return block(self.main, "http")

    @property
    def servers(self) -> list[Block]:
        """The server blocks of nginx.conf's http block, in order."""
        return [b for _, b in blocks(self.http, "server")]

    def server(self, listen: str) -> Block:
        """The one server block of nginx.conf whose first listen directive starts with `listen`."""
        found = [s for s in self.servers if " ".join(directives(s, "listen")[0]).startswith(listen)]
        assert len(found) == 1, f"{len(found)} servers listen on {listen!r}"
        return found[0]

    def file(self, name: str) -> Block:
        """The parsed file that an include names (an absolute path under CONF_DIR), or a relative name."""
        return self.parsed[name.removeprefix(CONF_DIR + "/")]

    def expand(self, statements: Block) -> Block:
        """`statements` with each include replaced by what the included file says, as nginx reads it
        (recursively, and inside nested blocks too)."""
        out = []
        for statement in statements:
            if statement["directive"] == "include":
                out += self.expand(self.file(statement["args"][0]))
            elif "block" in statement:
                out.append({**statement, "block": self.expand(statement["block"])})
            else:
                out.append(statement)
        return out


def read(config: Config, tls: TlsFacts = TlsFacts()) -> Rendered:
    """Render for `config` and `tls` into a directory laid out like CONF_DIR, and parse every file."""
    files = render(config, tls)
    with tempfile.TemporaryDirectory() as tmp:
        conf_dir = Path(tmp) / CONF_DIR.lstrip("/")
        for name, text in files.items():
            (conf_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (conf_dir / name).write_text(text)
        parsed = {name: _parse(conf_dir / name, name == MAIN_FILE) for name in files}
    return Rendered(files, parsed)


def _parse(path: Path, main: bool) -> Block:
    # each file on its own (single): the includes name paths inside the
    # container, which Rendered.expand resolves. A snippet is read out of the
    # context it is included in, so only nginx.conf gets crossplane's check
    # of which directive may stand where
    payload = crossplane.parse(str(path), single=True, comments=True, catch_errors=False, check_ctx=main)
    assert payload["status"] == "ok", payload["errors"]
    return payload["config"][0]["parsed"]


def statements(block: Block) -> Block:
    """The block's directives, without its comments."""
    return [s for s in block if s["directive"] != "#"]


def comments(block: Block) -> list[str]:
    return [s["comment"] for s in block if s["directive"] == "#"]


def directives(block: Block, name: str) -> list[list[str]]:
    """The arguments of each directive `name` directly in `block`, in order."""
    return [s["args"] for s in block if s["directive"] == name]


def directive(block: Block, name: str) -> list[str]:
    """The arguments of the one directive `name` directly in `block`."""
    found = directives(block, name)
    assert len(found) == 1, f"{len(found)} {name} directives, not one"
    return found[0]


def blocks(block: Block, name: str) -> list[tuple[list[str], Block]]:
    """(arguments, block) of each block directive `name` directly in `block`."""
    return [(s["args"], s["block"]) for s in block if s["directive"] == name and "block" in s]


def block(parent: Block, name: str, *args: str) -> Block:
    """The one block directive `name` with arguments `args` directly in `parent`."""
    found = [b for a, b in blocks(parent, name) if not args or a == list(args)]
    assert len(found) == 1, f"{len(found)} {name} {' '.join(args)} blocks, not one"
    return found[0]


def locations(server: Block) -> dict[str, Block]:
    """{modifier and path, as written ("= /health", "^~ /api/", "/"): block} of the locations directly in `server`."""
    found = [(" ".join(args), b) for args, b in blocks(server, "location")]
    keys = [k for k, _ in found]
    assert len(keys) == len(set(keys)), f"a location twice: {keys}"
    return dict(found)


def walk(block: Block) -> Iterator[dict]:
    """Every statement in `block` and in the blocks nested in it, comments left out, in order."""
    for statement in statements(block):
        yield statement
        yield from walk(statement.get("block", []))


def everywhere(block: Block, name: str) -> list[list[str]]:
    """The arguments of each directive `name` in `block` or nested in it, in order."""
    return [s["args"] for s in walk(block) if s["directive"] == name]


def shape(block: Block) -> list:
    """What a block says, without where it says it (line numbers): to compare two blocks."""
    return [(s["directive"], s.get("comment", s["args"]), shape(s["block"]) if "block" in s else None) for s in block]

"""The docs: the generated table of keys is current, every relative link
(and its anchor) leads somewhere, the README stays short, and what other
tests and tools read out of the docs is where they look for it."""

import importlib
import re
from pathlib import Path

import pytest

from rumistack import docs
from rumistack.config import KEYS

ROOT = Path(__file__).parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])
README_MAX_LINES = 150

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def _prose(text: str) -> str:
    """The text without code blocks and code spans, where nothing is a link or a heading."""
    return _CODE.sub("", _FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings."""
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in found:
            n += 1
            anchor = f"{slug}-{n}"
        found.add(anchor)
    return found


def test_the_table_of_keys_is_what_keys_and_env_example_generate():
    committed = (ROOT / docs.FILE).read_text()
    generated = docs.rewrite(committed, docs.keys_table((ROOT / docs.ENV_EXAMPLE).read_text()))
    assert committed == generated, "docs/configuration.md is stale: run `python -m rumistack.docs` from the checkout's root"


def test_every_key_is_in_the_configuration_page_with_its_default():
    page = (ROOT / docs.FILE).read_text()
    for key in KEYS:
        row = next((line for line in page.splitlines() if line.startswith(f"| `{key.name}` |")), None)
        assert row is not None, f"{key.name} is not in {docs.FILE}"
        assert (f"`{key.default}`" if key.default else "(none)") in row


def test_every_key_has_its_own_comment_in_env_example():
    described = docs.descriptions((ROOT / docs.ENV_EXAMPLE).read_text())
    assert [key.name for key in KEYS if not described.get(key.name)] == []


def test_a_comment_heading_a_group_describes_no_key():
    described = docs.descriptions("# a group\n\n# the first\nA=1\nB=2\n# the third\nC=3\n")
    assert described == {"A": "the first", "B": "", "C": "the third"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert broken == []


def test_the_readme_is_short_apart_from_the_benchmarks_summary():
    # the summary between the bench markers is bench/run's output (the issue asks for it in the README)
    text = re.sub(r"<!-- bench:start -->\n.*?<!-- bench:end -->", "", (ROOT / "README.md").read_text(), flags=re.S)
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines besides the benchmark; move detail into docs/"


def test_the_readme_shows_the_benchmarks_summary_of_its_last_full_run(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # as bench/run runs it: bench/bench.py is `bench`
    bench = importlib.import_module("bench")
    written = bench.DOCS_BLOCK.search((ROOT / "README.md").read_text())[0]
    run = bench.DOCS_BLOCK.search((ROOT / "docs" / "auth-cache.md").read_text())[0]
    assert bench.summary(run) in written and "- PASS: equal refusals" in written


def test_the_readme_starts_with_the_first_two_commands():
    first_block = re.search(r"^```\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)[1]
    assert [line.split()[0] for line in first_block.splitlines()] == ["scripts/demo", "scripts/test"]


def test_what_tests_and_the_benchmark_read_out_of_the_docs_is_there():
    compose = (ROOT / "docs" / "compose.md").read_text()
    assert "\n## run it\n" in compose  # tests/integration/bundle.py runs the commands of this section
    assert "cp .env.example .env" in compose.split("\n## run it\n", 1)[1].split("\n## ", 1)[0]
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert sum(line.startswith("failregex = ") for line in operations.splitlines()) == 1  # test_auth_throttle.py
    cache = (ROOT / "docs" / "auth-cache.md").read_text()
    assert cache.count("<!-- bench:start -->\n") == cache.count("<!-- bench:end -->") == 1  # bench/bench.py


def test_the_readmes_swarm_commands_are_the_ones_the_swarm_test_runs():
    """tests/integration/test_swarm_stack.py runs docs/swarm.md's "run it" block as written against the
    three-node swarm; the README's swarm section shows the same commands."""
    def block(text: str, section: str) -> str:
        part = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
        (found,) = re.findall(r"^```\n(.*?)^```", part, re.S | re.M)
        return found

    readme = block((ROOT / "README.md").read_text(), "on several machines")
    assert readme == block((ROOT / "docs" / "swarm.md").read_text(), "run it")
    assert "rumistack render --swarm" in readme

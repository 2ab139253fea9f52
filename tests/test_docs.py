"""The docs: the generated table of keys in docs/configuration.md is current."""

from pathlib import Path

from rumistack import docs
from rumistack.config import KEYS

ROOT = Path(__file__).parent.parent


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

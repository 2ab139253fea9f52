"""Property tests: any string given for a key that reaches nginx.conf is
either refused with an error naming the key, or lands in its directive as a
single token that nginx cannot read as anything else."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from rumistack.config import load_config
from rumistack.errors import ConfigError
from rumistack.render import render

# printable ASCII, the characters that could end or open a directive, and some beyond ASCII
NASTY = st.text(alphabet=st.sampled_from(list(map(chr, range(32, 127))) + list("\n\r\t\x00\x1b\x7féü€\u2028")),
                max_size=40)
# inside nginx's double quotes only these can end the string, escape or interpolate
UNSAFE_QUOTED = re.compile(r"""["\\$\x00-\x1f\x7f]""")


def _render(key: str, value: str) -> dict[str, str] | None:
    try:
        return render(load_config("/nonexistent", environ={key: value}))
    except ConfigError as exc:
        assert str(exc).startswith(f"{key}=")
        return None


@given(NASTY)
def test_realm_is_refused_or_quoted_safely(value):
    files = _render("RUMISTACK_REALM", value)
    if files is not None and value:
        assert not UNSAFE_QUOTED.search(value)
        assert f'auth_basic "{value}";\n' in files["snippets/auth-verifier.conf"]
        assert f'proxy_set_header X-Rumistack-Realm "{value}";\n' in files["snippets/auth-verifier.conf"]


@given(NASTY)
def test_domain_is_refused_or_a_single_bare_token(value):
    files = _render("RUMISTACK_DOMAIN", value)
    if files is not None and value:
        assert re.fullmatch(r"[A-Za-z0-9.-]+", value)
        assert f"server_name {value};\n" in files["nginx.conf"]


@given(st.lists(NASTY, max_size=3).map(",".join))
def test_exempt_paths_are_refused_or_bare_location_paths(value):
    files = _render("RUMISTACK_EXEMPT_PATHS", value)
    if files is not None:
        for entry in filter(None, (e.strip() for e in value.split(","))):
            path = entry.removesuffix("*")
            assert re.fullmatch(r"[A-Za-z0-9._~/-]+", path)
            assert f"location {'^~' if entry.endswith('*') else '='} {path} {{\n" in files["nginx.conf"]


@given(NASTY)
def test_image_names_are_refused_or_plain_references(value):
    try:
        config = load_config("/nonexistent", environ={"RUMISTACK_NGINX_IMAGE": value})
    except ConfigError:
        return
    assert not value or re.fullmatch(r"[A-Za-z0-9._:/@-]+", config.nginx_image)

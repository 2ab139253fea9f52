"""`rumistack check` against real nginx: the documented configuration fails
it, rumistack's passes."""

from click.testing import CliRunner

from rumistack.check import audit
from rumistack.cli import cli


def _failures(results) -> dict[str, str]:
    return {f"{r.case.target} [{r.case.credentials}]": r.note for r in results if not r.ok}


def test_check_finds_the_bypasses_and_the_leak_of_the_documented_config(seed_proxy):
    failures = _failures(audit(f"http://127.0.0.1:{seed_proxy.port}", seed_proxy.user, seed_proxy.password))
    for target in ("/healthz", "/health/x", "/health/", "/manifest.webmanifest.bak", "/manifest.webmanifestx"):
        assert failures[f"{target} [none]"].startswith("bypass"), target
    for target in ("/%61pi/convos", "/%68ealth", "/health%20", "/health;x"):
        assert "answered as something else" in failures[f"{target} [none]"], target
    assert failures["/ [right]"] == "Basic credentials forwarded to the app"
    assert failures["/health [right]"] == "Basic credentials forwarded to the app"


def test_check_passes_rumistacks_config(proxy):
    results = audit(proxy.url, proxy.user, proxy.password, tls=proxy.tls)
    assert _failures(results) == {}
    assert len(results) >= 60


def test_check_command_prints_the_table_and_exits_non_zero_on_failure(seed_proxy, proxy):
    bad = CliRunner().invoke(cli, ["check", f"http://127.0.0.1:{seed_proxy.port}", "--user", seed_proxy.user,
                                   "--password-stdin"], input=seed_proxy.password + "\n")
    assert bad.exit_code == 1
    assert "FAIL near-miss   /healthz" in bad.output
    trust = ["--ca-file", str(proxy.ca_file)] if proxy.ca_file else []
    good = CliRunner().invoke(cli, ["check", proxy.url, "--user", proxy.user, "--password-stdin", *trust],
                              input=proxy.password + "\n")
    assert good.exit_code == 0, good.output
    assert ": 0 failed" in good.output


def test_check_of_an_unreachable_url_is_one_clear_line():
    result = CliRunner().invoke(cli, ["check", "http://127.0.0.1:9", "--user", "a", "--password-stdin"], input="b\n")
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach http://127.0.0.1:9")

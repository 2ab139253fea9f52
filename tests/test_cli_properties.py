"""The CLI under hypothesis: random bytes and printable text in .env, in the
user file, in RumiTalk's settings file and YAML, and as arguments. Every run ends with a known exit code, and
never with a traceback. The Docker engine cannot be reached; the state
directory is always a fresh temporary one (a random RUMISTACK_STATE_DIR
could point anywhere)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rumistack.cli import cli
from rumistack.config import KEYS

# 0 ok, 1 a refusal at a prompt or a failed check, 2 bad input (ours and click's), 3 no engine, 4 stack,
# 5 busy, 6 a file, 70 a bug (which these tests look for)
KNOWN = {0, 1, 2, 3, 4, 5, 6}
# commands that never reach beyond this machine with a Docker engine out of reach (`check` would probe a URL)
COMMANDS = ("adduser", "passwd", "deluser", "users", "up", "down", "render", "reload", "status", "logs")
GOOD = "correct horse battery"
NAMES = [k.name for k in KEYS if k.name != "RUMISTACK_STATE_DIR"]

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
line = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(NAMES), st.one_of(text, printable, st.just("x" * 100_000))),
    text,
)
env_text = st.lists(line, max_size=8).map(lambda lines: "\n".join(lines))
env_bytes = st.one_of(st.binary(max_size=500), env_text.map(str.encode),
                      env_text.map(lambda t: t.replace("\n", "\r\n").encode()),
                      st.builds(lambda t, b: t.encode() + b, env_text, st.binary(max_size=20)))
user_bytes = st.one_of(st.binary(max_size=500), st.lists(printable, max_size=5).map(lambda ls: "\n".join(ls).encode()),
                       st.just(b"alice:$2y$05$" + b"a" * 53 + b"\n"), st.just(b"\0\0\0"))
args = st.lists(st.one_of(text.filter(lambda a: "\0" not in a), printable, st.sampled_from(
    ["--password-stdin", "--json", "-f", "--tail", "-n", "--yes", "--volumes", "--strict", "alice"])), max_size=4)


def invoke(argv: list[str], env_file: bytes | None, users: bytes | None, environ: dict[str, str] | None = None,
           stdin: str = GOOD + "\n", files: dict[str, bytes] | None = None):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = root / "state"
        if users is not None:
            state.mkdir()
            (state / "htpasswd").write_bytes(users)
        if env_file is not None:
            (root / ".env").write_bytes(env_file)
        for name, data in (files or {}).items():  # RumiTalk's settings file and YAML, at their default names
            (root / name).write_bytes(data)
        env = {name: None for name in os.environ if name.startswith(("RUMISTACK_", "RUMITALK_"))}
        env.update(environ or {})
        env.update({"RUMISTACK_STATE_DIR": str(state), "DOCKER_HOST": f"unix://{root}/no-docker.sock"})
        cwd = os.getcwd()
        os.chdir(root)
        try:
            result = CliRunner().invoke(cli, ["--env-file", str(root / ".env"), *argv], input=stdin, env=env)
        finally:
            os.chdir(cwd)
    assert result.exit_code in KNOWN, (argv, result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, repr(result.exception))
    assert "Traceback" not in result.output
    if result.exit_code not in (0, 1) and "Usage:" not in result.output:
        # ours, or click's for an option without its argument (one line, with no usage above it)
        errors = [line for line in result.output.splitlines() if line.startswith(("error: ", "Error: "))]
        assert errors, (argv, result.output)
    return result


PROPERTY = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(env_bytes, st.sampled_from(COMMANDS))
def test_any_env_file(env_file, command):
    argv = [command, "alice", "--password-stdin"] if command in ("adduser", "passwd") else [command]
    if command == "deluser":
        argv = [command, "alice"]
    invoke(argv, env_file, None)


@PROPERTY
@given(user_bytes, st.sampled_from(COMMANDS))
def test_any_user_file(users, command):
    argv = [command, "alice", "--password-stdin"] if command in ("adduser", "passwd") else [command]
    invoke(argv, b"RUMISTACK_TLS=off\nRUMISTACK_BIND_ADDRESS=127.0.0.1\n", users)


@PROPERTY
@given(st.sampled_from(COMMANDS), args, text)
def test_any_arguments_and_password(command, argv, stdin):
    invoke([command, *argv], None, None, stdin=stdin)


@PROPERTY
@given(st.dictionaries(st.sampled_from(NAMES), text.filter(lambda v: "\0" not in v), max_size=4),
       st.sampled_from(COMMANDS))
def test_any_environment_variables(environ, command):
    invoke([command], None, None, environ=environ)


yaml_text = st.one_of(
    text, printable,
    st.builds(lambda name, key, url: f"endpoints:\n  custom:\n    - name: {name}\n      apiKey: {key}\n"
              f"      baseURL: {url}\n", text, printable, text),
    st.just("endpoints: [1, 2]\n"), st.just("endpoints:\n  custom: {a: 1}\n"), st.just("- a\n- b\n"),
)
settings_line = st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
    ["OPENAI_API_KEY", "MONGO_URI", "RUMISTACK_DOMAIN", "JWT_SECRET", "CREDS_KEY", "ENDPOINTS"]), text), text)


@PROPERTY
@given(st.one_of(st.binary(max_size=300), st.lists(settings_line, max_size=6).map(lambda ls: "\n".join(ls).encode())),
       st.one_of(st.binary(max_size=300), yaml_text.map(str.encode)), st.sampled_from(("up", "render", "status")))
def test_any_rumitalk_settings_and_yaml(settings_file, yaml_file, command):
    invoke([command], b"RUMISTACK_TLS=off\nRUMISTACK_BIND_ADDRESS=127.0.0.1\n", b"alice:$2y$05$" + b"a" * 53 + b"\n",
           files={"rumitalk.env": settings_file, "rumitalk.yaml": yaml_file})

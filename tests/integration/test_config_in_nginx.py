"""Property test against real nginx: random values for the keys that reach
nginx.conf are refused, or give a config that `nginx -t` accepts and that
means exactly what was asked (the realm in the challenge, each exemption
exempt and nothing else)."""

from __future__ import annotations

import time

import hardened
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rumistack.config import load_config
from rumistack.errors import ConfigError
from rumistack.layout import AUTH_DIR, CONF_DIR, MAIN_FILE, NGINX_GID, USER_FILE
from rumistack.probe import ProbeError, request
from rumistack.render import render
from rumistack.users import UserFile
from rumistack.volumes import File, archive, user_file_name
from testenv import TEST_LABELS

# half plausible values, half anything: so that many examples reach nginx, and the rest try to break in
ANY = st.text(alphabet=st.sampled_from(list(map(chr, range(32, 127))) + ["\n", "\t", "\x00", "é"]), max_size=16)
REALM = st.one_of(st.text(alphabet=st.sampled_from(list("Rumi Talk'#%<>!()@&*+=/|~^-_.,:?")), max_size=16), ANY)
DOMAIN = st.one_of(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True), ANY)
PLAIN_SEGMENT = st.text(alphabet=st.sampled_from(list("abcXYZ09._~-")), min_size=1, max_size=6)
ODD_SEGMENT = st.text(alphabet=st.sampled_from(list("abc.;{}$%\"' /")), min_size=1, max_size=4)


def _entries(segment):
    return st.tuples(st.lists(segment, min_size=1, max_size=3), st.booleans()).map(
        lambda t: "/" + "/".join(t[0]) + ("/*" if t[1] else ""))


PATHS = st.lists(st.one_of(_entries(PLAIN_SEGMENT), _entries(ODD_SEGMENT)), max_size=3).map(",".join)


@pytest.fixture(scope="module")
def scratch_nginx(docker_client, test_images, tmp_path_factory):
    """An idle container of the nginx image where configs are put, tested and run one by one."""
    container = docker_client.containers.run(
        test_images["nginx"], ["sleep", "3600"], detach=True, labels=TEST_LABELS,
        extra_hosts={"rumitalk": "127.0.0.1"}, ports={"80/tcp": ("127.0.0.1", None)},
        # the stack's, for the cache of verified credentials, the pid file and temporary paths (its root
        # filesystem stays writable: configs are put into it)
        tmpfs=hardened.TMPFS,
    )
    users = UserFile(tmp_path_factory.mktemp("users") / "htpasswd")
    users.add("alice", "correct horse battery")
    # the layout publish_user_file makes: the content under its hash, and the link nginx resolves
    name = user_file_name(users.content())
    container.put_archive("/", archive({name: File(users.content(), mode=0o640, gid=NGINX_GID)}, prefix=AUTH_DIR,
                                       links={USER_FILE: name}))
    container.reload()
    yield container, int(container.ports["80/tcp"][0]["HostPort"])
    container.remove(force=True)


def _wait_answering(base: str) -> None:
    for _ in range(250):
        try:
            request(base, "/nginx-started", timeout=1)
            return
        except ProbeError:
            time.sleep(0.02)
    raise AssertionError("nginx did not start")


def _exempt(path: str, exemptions) -> bool:
    return any(path == e.path if e.exact else path.startswith(e.path) for e in exemptions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(realm=REALM | st.just(""), domain=DOMAIN | st.just(""), paths=PATHS)  # "": the default
def test_random_values_are_refused_or_mean_exactly_what_was_asked(scratch_nginx, realm, domain, paths):
    container, port = scratch_nginx
    try:
        config = load_config("/nonexistent", environ={
            "RUMISTACK_TLS": "off", "RUMISTACK_REALM": realm, "RUMISTACK_DOMAIN": domain, "RUMISTACK_EXEMPT_PATHS": paths})
    except ConfigError:
        event("refused")
        return
    event(f"accepted, {len(config.exempt_paths)} own exemptions")
    container.put_archive("/", archive({n: File(t.encode()) for n, t in render(config).items()}, prefix=CONF_DIR))
    conf = f"{CONF_DIR}/{MAIN_FILE}"
    code, output = container.exec_run(["nginx", "-t", "-q", "-c", conf])
    assert code == 0, output.decode()
    container.exec_run(["nginx", "-c", conf], detach=True)  # it logs to stderr: do not wait on it
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_answering(base)
        challenge = request(base, "/")
        assert challenge.status == 401
        assert challenge.headers["WWW-Authenticate"] == f'Basic realm="{config.realm}"'
        for exemption in config.exempt_paths:
            for target in (exemption.path if exemption.exact else exemption.path + "probe", exemption.path + "x"):
                status = request(base, target).status
                # exempt paths go to RumiTalk, absent here (502); everything else is challenged
                assert status == (502 if _exempt(target, config.exemptions) else 401), target
    finally:
        container.exec_run(["nginx", "-c", conf, "-s", "stop"])
        for _ in range(100):
            if container.exec_run(["test", "-e", "/run/nginx.pid"]).exit_code != 0:
                break
            time.sleep(0.02)

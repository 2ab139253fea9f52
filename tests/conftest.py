"""Shared fixtures: the Docker engine, the local test images, cleanup by the run's id.

Integration tests (marked `integration`) need a Docker engine and the local
images. Outside CI a missing engine skips them; with CI=true it fails them.
"""

from __future__ import annotations

import os
import warnings

import docker
import images
import leftovers
import pytest
from docker.errors import DockerException, ImageNotFound
from hypothesis import settings
from rumistack.config import KEYS
from testenv import IN_CI, RUN_ID

OFFICIAL_NGINX = next(k.default for k in KEYS if k.name == "RUMISTACK_NGINX_IMAGE")

# the property tests judge what is accepted, never how fast: a loaded machine must not fail them
settings.register_profile("rumistack", deadline=None)
settings.load_profile("rumistack")

_SWEPT: list[str] = []  # the ended runs whose objects this one removed at its start

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image cannot be pulled here
os.environ.setdefault("TC_HOST", "127.0.0.1")  # wait strategies knock on loopback, never on the gateway's address


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if "chromium" in getattr(item, "fixturenames", ()):  # the real browser (tests/integration/conftest.py)
            item.add_marker(pytest.mark.browser)
        if "swarm" in getattr(item, "fixturenames", ()):  # three engines (tests/integration/swarmnodes.py)
            item.add_marker(pytest.mark.swarm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the item (item.rep_setup, rep_call, rep_teardown), for fixtures that keep
    evidence of a failure (the browser tests' screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        message = f"no Docker engine ({exc}); run scripts/test, which starts one"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # held until this process ends, however it ends: while it is, no other run sweeps this one's objects
    lock = leftovers.hold_run_lock()
    # what earlier runs left when they crashed; other runs may share the engine, so ended ones only
    _SWEPT.extend(leftovers.sweep(client))
    yield client
    # this run's objects only. If some stay, so does the run's file, and the next run tries again
    failures = leftovers.remove_run(client, RUN_ID)
    if failures:
        warnings.warn(f"this test run's objects that could not be removed: {failures}")
        lock.close()
    else:
        leftovers.release_run_lock(lock)


@pytest.fixture(scope="session")
def test_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """Image per service: the official nginx image when it is here, else the local one; stand-ins for the rest
    (and the benchmark's static upstream), and for RumiTalk's AI provider ("ai"). For the HTTPS tests also
    certbot, pebble (the ACME test server), and Debian's nginx 1.22 and 1.26 (nginx-bookworm, nginx-trixie)
    whatever "nginx" is."""
    try:
        pinned = images.ensure_images(docker_client)
    except Exception as exc:  # any failure to build means no images: never a silent skip in CI
        if IN_CI:
            pytest.fail(f"the local test images could not be built: {exc}")
        pytest.skip(f"the local test images could not be built: {exc}")
    try:
        docker_client.images.get(OFFICIAL_NGINX)
        nginx = OFFICIAL_NGINX
    except ImageNotFound:
        nginx = pinned[images.NGINX]
    return {"nginx": nginx, "rumitalk": pinned[images.STUB], "mongodb": pinned[images.MONGO],
            "meilisearch": pinned[images.MEILI], "python": pinned[images.PYTHON],
            "static-upstream": pinned[images.STATIC_UPSTREAM], "certbot": pinned[images.CERTBOT],
            "pebble": pinned[images.PEBBLE], "nginx-bookworm": pinned[images.NGINX],
            "nginx-trixie": pinned[images.NGINX_TRIXIE], "ai": pinned[images.AI],
            "docker-node": pinned[images.DOCKER_NODE], "redis": pinned[images.REDIS]}


@pytest.fixture(scope="session")
def image_env(test_images) -> dict[str, str]:
    """The config keys that point rumistack at the test images."""
    return {"RUMISTACK_NGINX_IMAGE": test_images["nginx"], "RUMITALK_IMAGE": test_images["rumitalk"],
            "RUMISTACK_MONGO_IMAGE": test_images["mongodb"], "RUMISTACK_MEILI_IMAGE": test_images["meilisearch"],
            "RUMISTACK_TOOLS_BASE_IMAGE": test_images["python"], "RUMISTACK_CERTBOT_IMAGE": test_images["certbot"]}


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    for kind in ("integration", "browser", "swarm"):
        counts = {}
        for outcome in ("passed", "failed", "skipped", "error"):
            counts[outcome] = sum(1 for r in terminalreporter.stats.get(outcome, []) if kind in getattr(r, "keywords", {}))
        ran = counts["passed"] + counts["failed"] + counts["error"]
        terminalreporter.write_line(
            f"{kind} tests run: {ran} ({counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['error']} errors, {counts['skipped']} skipped)"
        )
    # where the time went, a line a module (setup, calls and teardown), so CI's time can be kept in view
    seconds: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                module = report.nodeid.split("::", 1)[0]
                seconds[module] = seconds.get(module, 0.0) + report.duration
    slowest = sorted(seconds.items(), key=lambda item: -item[1])[:12]
    if slowest and sum(seconds.values()) > 60:
        terminalreporter.write_line("the slowest test modules: " + ", ".join(
            f"{module.removeprefix('tests/')} {total:.0f} s" for module, total in slowest))
    if _SWEPT:
        terminalreporter.write_line(f"removed what {len(_SWEPT)} ended test runs left: {', '.join(_SWEPT)}")

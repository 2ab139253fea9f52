"""Quiet health checks: once `up` has returned, the engine checks each container at most twice a minute,
and `up` still returns as soon as the stack is ready (it runs the checks itself on engines without a
start interval, such as this machine's 20.10)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from clirun import PASSWORD
from web import basic, send

from rumistack.spec import LABEL_PROJECT


def _when(stamp: str) -> float:
    """A Docker timestamp (nanoseconds, Z or an offset) as seconds since the epoch."""
    head, _, rest = stamp.partition(".")
    zone = rest.lstrip("0123456789")
    fraction = rest[:len(rest) - len(zone)][:6] or "0"
    parsed = datetime.fromisoformat(f"{head}.{fraction.ljust(6, '0')}{'+00:00' if zone == 'Z' else zone}")
    return parsed.astimezone(timezone.utc).timestamp()


def test_health_checks_run_at_most_twice_in_an_idle_minute(running_project):
    project = running_project  # its `up` returned: the stack was ready
    returned = time.time()
    assert send(project.port, "/", headers={"Authorization": basic("alice", PASSWORD)}).status == 200
    time.sleep(62)
    containers = project.client.containers.list(filters={"label": [f"{LABEL_PROJECT}={project.name}",
                                                                   "rumistack.service"]})
    assert {c.labels["rumistack.service"] for c in containers} == {"nginx", "verifier", "rumitalk", "mongodb"}
    for container in containers:
        health = container.attrs["State"]["Health"]
        checks = [entry for entry in health["Log"] if returned <= _when(entry["Start"]) < returned + 60]
        assert 1 <= len(checks) <= 2, (container.name, health["Log"])
        assert health["Status"] == "healthy", (container.name, health)

"""Facts the test modules share: the run's id, and the names that carry it.

Every Docker object a test run creates carries the run's id, so that a later
run can remove what this one left if it crashed (tests/leftovers.py): objects
the tests create themselves in the label rumistack.test; objects that
`rumistack up` and docker compose create (whose labels are the product's) in
their project's name, rumistack-<kind>-<run id>-<hex>."""

import os
import re
import uuid

IN_CI = os.environ.get("CI") == "true"
TEST_LABEL = "rumistack.test"  # on every Docker object a test creates; its value names the run
RUN_ID = uuid.uuid4().hex[:12]
TEST_LABELS = {TEST_LABEL: RUN_ID}
# a test project's name: its kind, the run that made it, a part of its own
TEST_PROJECT = re.compile(r"rumistack-[a-z0-9]+-(?P<run>[0-9a-f]{12})-[0-9a-f]+")


def project_name(kind: str) -> str:
    """A project name of this run's, unique within it (`kind`: e2e, compose, acme)."""
    name = f"rumistack-{kind}-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    assert TEST_PROJECT.fullmatch(name), name
    return name

"""Facts the test modules share."""

import os
import uuid

IN_CI = os.environ.get("CI") == "true"
TEST_LABEL = "rumistack.test"  # on every Docker object a test creates; its value names the run
RUN_ID = uuid.uuid4().hex[:12]
TEST_LABELS = {TEST_LABEL: RUN_ID}

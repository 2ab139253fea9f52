"""Facts the test modules share."""

import os

IN_CI = os.environ.get("CI") == "true"
TEST_LABEL = "rumistack.test"  # on every Docker object a test creates; removed by label

"""bench/run --smoke works end to end: every setup starts, every row of a
legitimate client got only 2xx answers (the benchmark fails otherwise), and
the table and chart are written. It measures nothing: no timing is asserted."""

import subprocess
from pathlib import Path

from testenv import TEST_LABEL, TEST_LABELS

ROOT = Path(__file__).parents[2]


def test_the_benchmark_runs_every_row_and_writes_the_table_and_chart(docker_client, test_images, tmp_path):
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--smoke", "--out", str(tmp_path), "--label", f"{TEST_LABEL}={TEST_LABELS[TEST_LABEL]}",
         "--upstream-image", test_images["static-upstream"]],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = (tmp_path / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| setup")
            and line.count(" | ") >= 6]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == [
        "upstream, direct",
        "nginx, no auth (the same nginx, an exempt path)",
        "nginx auth_basic, bcrypt cost 12",
        "rumistack auth (cached), bcrypt cost 12",
        "rumistack strict API mode, cached Bearer token",
        "rumistack auth during a wrong-password flood",
        "Caddy, no auth",
        "Caddy basic_auth (cached), bcrypt cost 12",
    ]
    browser_rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()
                    if line.startswith("| ") and " ms | " in line and "x |" in line]
    assert browser_rows == ["no auth (nginx of the same image)", "rumistack, first visit (one bcrypt verification)",
                            "rumistack, second visit (cached)"]
    assert "- a real browser reaches a streamed reply in " in table
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert not list(docker_client.containers.list(all=True, filters={"name": "rumibench-"}))

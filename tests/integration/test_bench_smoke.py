"""bench/run --smoke works end to end: every setup starts (HTTPS, HTTP/2,
the flood's containers), every row of a legitimate client got only 2xx
answers (the benchmark fails otherwise), every refusal was timed, every
verdict line is there, and the table and chart are written. It measures
nothing: no timing is asserted, and no verdict's outcome."""

import re
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
        "upstream, direct (HTTP)",
        "nginx, no auth (the same nginx, an exempt path)",
        "nginx auth_basic, bcrypt cost 12 (HTTP)",
        "rumistack auth (cached), bcrypt cost 12",
        "rumistack strict API mode, cached Bearer token",
        "Caddy, no auth",
        "Caddy basic_auth (cached), bcrypt cost 12",
        "HTTP/2: nginx, no auth (an exempt path)",
        "HTTP/2: rumistack auth (cached)",
        "HTTP/2: Caddy, no auth",
        "HTTP/2: Caddy basic_auth (cached)",
        "rumistack auth (cached), alone, between the flood's rounds",
        "rumistack auth (cached), during a wrong-password flood from 3 addresses",
    ]
    # the flood's containers sent wrong passwords, and each got an answer
    flood_note = rows[-1].split(" | ")[-1].rstrip(" |")
    assert re.fullmatch(r"[\d,]+ wrong passwords for its own user name, .*; the answers: \d[\d,]* (401|429)\b.*", flood_note), flood_note
    refusals = [line.split(" | ") for line in table.splitlines() if line.startswith("| an existing user") or
                line.startswith("| an unknown user")]
    assert [int(cells[-1].rstrip(" |")) for cells in refusals] == [2, 2], refusals
    verdicts = [line for line in table.splitlines() if re.match(r"- (PASS|FAIL|NOT MEASURED): ", line)]
    expected = [r"- (PASS|FAIL): over HTTPS, authenticated at \d+% of no auth ",
                r"- (PASS|FAIL): during a wrong-password flood from 3 addresses, the cached user keeps \d+% ",
                r"- (PASS|FAIL): equal refusals: a wrong password for an existing user is refused in [\d.]+ ms, "
                r"an unknown user in [\d.]+ ms "]
    assert len(verdicts) == len(expected) and all(re.match(p, v) for p, v in zip(expected, verdicts)), verdicts
    browser_rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()
                    if line.startswith("| ") and " ms | " in line and "x |" in line]
    assert browser_rows == ["no auth (nginx of the same image)", "rumistack, first visit (one bcrypt verification)",
                            "rumistack, second visit (cached)"]
    assert "- a real browser reaches a streamed reply in " in table
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert not list(docker_client.containers.list(all=True, filters={"name": "rumibench-"}))

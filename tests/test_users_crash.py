"""The user file under concurrency and crashes, with real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from rumistack.users import UserFile

PASSWORD = "correct horse battery"


def test_fifty_concurrent_adduser_runs_all_land(tmp_path):
    env = {**os.environ, "RUMISTACK_STATE_DIR": str(tmp_path / "state"),
           "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    rumistack = os.path.join(os.path.dirname(sys.executable), "rumistack")

    def adduser(n: int) -> subprocess.CompletedProcess:
        return subprocess.run([rumistack, "adduser", f"user{n:02}", "--password-stdin"], input=PASSWORD + "\n",
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(adduser, range(50)))
    assert [r.returncode for r in results] == [0] * 50, [r.stderr for r in results if r.returncode]
    assert UserFile(tmp_path / "state" / "htpasswd").names() == [f"user{n:02}" for n in range(50)]


WRITER = """
import sys
from rumistack.users import UserFile
users = UserFile(sys.argv[1])
for name in users.names():
    users.delete(name)
"""


def test_a_writer_killed_at_any_point_leaves_the_old_or_the_new_file(tmp_path):
    path = tmp_path / "htpasswd"
    line = UserFile(path)
    line.add("u00000", PASSWORD)
    hashed = path.read_text().split(":", 1)[1]
    names = [f"u{n:05}" for n in range(3000)]
    path.write_text("".join(f"{name}:{hashed}" for name in names))  # a big file: each write takes a while

    rng = random.Random(1234)
    kills = 0
    while kills < 25:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
        time.sleep(0.15 + rng.random() * 0.25)  # past interpreter start, somewhere in the delete loop
        if writer.poll() is not None:
            break  # it finished every delete before we could kill it
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        kills += 1
        left = UserFile(path).names()  # parses: no torn line
        assert left == names[len(names) - len(left):]  # exactly the state after some number of deletes
    assert kills >= 20

    UserFile(path).add("after", PASSWORD)  # the next writer cleans up what the killed ones left
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".htpasswd.")] == []

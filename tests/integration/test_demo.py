"""The main job on this machine: `scripts/demo` ends with a chat that
answers. A real browser answers the Basic prompt with the printed user,
logs in to the web app with the stand-in's account, sends a message and
sees the streamed reply (scripts/screenshot, the script that made the
README's picture)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from bundle import outside_environment
from clirun import free_port

from testenv import project_name

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.browser


def test_the_demo_ends_with_a_chat_that_answers_in_a_real_browser(tmp_path, test_images):
    project = project_name("e2e")
    env = {**outside_environment(), "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           # a project of its own, on loopback and free ports, its files in this test's directory
           "RUMISTACK_PROJECT": project, "RUMISTACK_BIND_ADDRESS": "127.0.0.1",
           "RUMISTACK_HTTP_PORT": str(free_port()), "RUMISTACK_HTTPS_PORT": str(free_port()),
           "RUMISTACK_STATE_DIR": str(tmp_path / "state"), "RUMITALK_ENV_FILE": str(tmp_path / "rumitalk.env"),
           "RUMISTACK_DEMO_PASSWORD": "demo password of this test"}
    env_file = ROOT / ".env"
    had_env_file = env_file.exists()  # the demo writes one when there is none: this test removes it again
    try:
        demo = subprocess.run([ROOT / "scripts" / "demo"], env=env, capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "ai providers: openAI" in demo.stdout
        # later commands in a new shell find the local images through the .env the demo wrote
        if not had_env_file:
            assert "RUMISTACK_NGINX_IMAGE=rumistack-test/nginx:local" in env_file.read_text()
        url = re.search(r"^url: (\S+)$", demo.stdout, re.M)[1]
        shot = subprocess.run(
            [ROOT / "scripts" / "screenshot", url, "demo", env["RUMISTACK_DEMO_PASSWORD"], tmp_path / "demo.png",
             "--ca", tmp_path / "state" / "tls" / "self-signed.crt", "--message", "does the demo answer?"],
            env=env, capture_output=True, text=True, timeout=300)
        assert shot.returncode == 0 and "reply complete" in shot.stdout, shot.stdout + shot.stderr
        assert (tmp_path / "demo.png").read_bytes().startswith(b"\x89PNG")
    finally:
        down = subprocess.run([ROOT / ".venv" / "bin" / "rumistack", "down", "--volumes", "--yes"], env=env,
                              capture_output=True, text=True, timeout=300)
        if not had_env_file:
            env_file.unlink(missing_ok=True)
        assert down.returncode == 0, down.stdout + down.stderr

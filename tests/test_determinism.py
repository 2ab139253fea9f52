"""The same inputs give the same bytes, whatever Python's hash seed: the
rendered nginx config (whose hash is the config id `up` waits for) and the
compose file. Each process gets its own PYTHONHASHSEED, so an output that
followed the order of a set or of a hash would differ between them; two
calls in one process share the seed and could never show it."""

import json
import os
import subprocess
import sys

# configs that between them reach every template and branch of the renderers
CONFIGS = [
    {},
    {"RUMISTACK_TLS": "off", "RUMISTACK_STRICT_API": "true"},
    {"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": "chat.example.com", "RUMISTACK_EXEMPT_OAUTH": "true",
     "RUMISTACK_EXEMPT_PATHS": "/robots.txt,/public/*,/a/b.txt,/zz/*", "RUMISTACK_SEARCH": "true"},
]

PROGRAM = """
import json, sys
from rumistack import compose
from rumistack.config import load_config
from rumistack.render import TlsFacts, config_id, render
for env in json.loads(sys.argv[1]):
    config = load_config("/nonexistent", environ=env)
    for tls in (TlsFacts(), TlsFacts("1111aaaa", True, (1, 25, 1))):
        for name, text in render(config, tls).items():
            sys.stdout.write(f"=== {name}\\n{text}")
        sys.stdout.write(f"=== id {config_id(config, tls)}\\n")
sys.stdout.write("=== compose\\n" + compose.text())
"""


def _output(seed: str) -> bytes:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    result = subprocess.run([sys.executable, "-c", PROGRAM, json.dumps(CONFIGS)], env=env, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_rendered_config_and_compose_file_are_the_same_bytes_under_any_hash_seed():
    outputs = {seed: _output(seed) for seed in ("0", "1", "4242")}
    assert outputs["0"].count(b"=== nginx.conf\n") == 2 * len(CONFIGS) and b"=== compose\n" in outputs["0"]
    assert outputs["1"] == outputs["0"]
    assert outputs["4242"] == outputs["0"]

"""nginx as the stack runs it (spec.py's nginx service): its tmpfs mounts, and the hardening of its
container (no new privileges, few capabilities, a read-only root filesystem), for the nginx containers
that tests start themselves."""

from __future__ import annotations

from rumistack.config import load_config
from rumistack.layout import NGINX_RUN_DIR, NGINX_RUN_OPTIONS
from rumistack.secretstore import GENERATORS
from rumistack.spec import services

NGINX = next(s for s in services(load_config("/nonexistent", environ={}), {name: "x" for name in GENERATORS})
             if s.name == "nginx")

# the tmpfs for its pid file and temporary paths: what a container that only runs `nginx -t` needs too
RUN_TMPFS = {NGINX_RUN_DIR: NGINX_RUN_OPTIONS}
TMPFS = {t.target: t.options for t in NGINX.tmpfs}
# Docker SDK keyword arguments of containers.create/run
HARDENING = {"security_opt": list(NGINX.security_opt), "cap_drop": list(NGINX.cap_drop),
             "cap_add": list(NGINX.cap_add), "read_only": NGINX.read_only}

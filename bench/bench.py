"""The benchmark: Basic Auth through rumistack's nginx over HTTPS next to no
auth, nginx's plain auth_basic and Caddy's basic_auth, over HTTP/1.1 (wrk)
and HTTP/2 (h2load); the time of a refusal for an existing and an unknown
user; the cached user alone and during a wrong-password flood from 20
addresses; and a real browser's flow to a streamed reply with and without
auth (bench/browserflow.py). Run it with bench/run, which provisions what it
needs.

Everything runs in one go: rumistack's stack (`stack.up`, the real rendered
config, HTTPS with its self-signed certificate, every service of
`spec.services`) with a static asset server in RumiTalk's place, nginx with
plain auth_basic and Caddy (with the same certificate) in front of the same
upstream. The load rows run in short rounds, every row once a round, so a
busy moment on the machine spreads over all rows; each row shows its median
round. Load goes only to loopback and to containers on the networks this run
creates.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import math
import os
import re
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker

from rumistack import stack
from rumistack.config import load_config
from rumistack.layout import NGINX_GID
from rumistack.spec import LABEL_PROJECT, LABEL_SERVICE, container_name, labels, network_name
from rumistack.tls import SELF_SIGNED_CERT, SELF_SIGNED_KEY
from rumistack.users import UserFile
from rumistack.volumes import File, archive

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
import images  # noqa: E402  (the local images, built the way the tests build them)
from browserflow import BrowserFlows  # noqa: E402
import browserflow  # noqa: E402

USER, PASSWORD = "alice", "correct horse battery staple"
# the existing users whose wrong passwords the refusal rows time: several, so
# that no limit per user name throttles the samples
REFUSED_USERS = tuple(f"refused{n}" for n in range(10))
ASSET = "/asset.js"  # any path: the upstream answers every one with the same 1 KiB asset
DOCS_PAGE = "docs/auth-cache.md"  # a full run rewrites its table and chart, between these markers
DOCS_BLOCK = re.compile(r"(<!-- bench:start -->\n).*?(<!-- bench:end -->)", re.S)
# and the README's summary between the same markers: these rows of the table, and the verdicts
README_ROWS = ("nginx, no auth (", "rumistack auth (cached), bcrypt", "Caddy basic_auth (cached)",
               "rumistack auth (cached), alone", "rumistack auth (cached), during")
UPSTREAM_SERVICE = "rumitalk"  # the stack's service that the static upstream stands in for

# the goals of issue 14
GOAL_CACHED = 0.97  # cached auth at least this share of no auth, over HTTPS
GOAL_FLOOD_KEPT = 0.90  # the cached user keeps this share of its throughput during the flood
GOAL_FLOOD_P99 = 3.0  # and its p99 at most this many times its p99 alone
GOAL_REFUSALS = 0.10  # the slower refusal at most this much slower than the faster
FLOOD_QUIET = 30  # seconds the cached user alone waits at most for the flood's requests in flight to end


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: int  # per row and round (wrk takes whole seconds)
    threads: int
    connections: int
    streams: int  # h2load's concurrent streams per connection
    refusals: int  # timed refusals of each kind
    refusal_addresses: int  # the source addresses (containers) the refusals come from, one after the other
    refusal_spacing: float  # seconds from the start of one refusal to the next: under the total limit
    flood_addresses: int
    flood_rate: float  # wrong passwords a second from each address
    flood_rounds: int
    flood_warmup: float  # the flood runs this long before its rounds: its burst of verifications
    smoke: bool


FULL = Plan(rounds=5, seconds=3, threads=2, connections=16, streams=10, refusals=30, refusal_addresses=4,
            refusal_spacing=0.5, flood_addresses=20, flood_rate=5, flood_rounds=5, flood_warmup=6, smoke=False)
SMOKE = Plan(rounds=1, seconds=1, threads=1, connections=4, streams=4, refusals=2, refusal_addresses=2,
             refusal_spacing=0.5, flood_addresses=3, flood_rate=5, flood_rounds=1, flood_warmup=1, smoke=True)


@dataclass
class Run:
    """One load run's numbers."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    cpu_us: float | None = None  # CPU time of the server under test per request

    @property
    def rate(self) -> float:
        return (self.requests - self.non_2xx) / self.seconds


@dataclass
class Row:
    name: str
    note: str = ""
    runs: list[Run] = field(default_factory=list)
    baseline: Row | None = None  # the row its "vs no auth" compares with (the table's no-auth row if None)

    def median(self) -> Run:
        """The run of median rate (the lower one of an even count)."""
        return sorted(self.runs, key=lambda run: run.rate)[(len(self.runs) - 1) // 2]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Wrk:
    """HTTP/1.1 load with keep-alive (wrk), over TLS for https:// URLs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def run(self, url: str, plan: Plan, headers: dict[str, str] | None = None) -> Run:
        path = self.workdir / f"wrk-{secrets.token_hex(4)}.lua"
        path.write_text((BENCH / "report.lua").read_text())
        command = ["wrk", f"-t{plan.threads}", f"-c{plan.connections}", f"-d{plan.seconds:g}s",
                   "--timeout", "10s", "-s", str(path)]
        for key, value in (headers or {}).items():
            command += ["-H", f"{key}: {value}"]
        result = subprocess.run([*command, url], capture_output=True, text=True, timeout=plan.seconds + 60)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed: {result.stdout.strip()} {result.stderr.strip()}")
        data = json.loads(lines[-1])
        return Run(data["requests"], data["duration_us"] / 1e6, data["non_2xx"], data["socket_errors"],
                   data["p50_us"] / 1000, data["p99_us"] / 1000)


class H2load:
    """HTTP/2 load over TLS (h2load): `connections` connections with `streams` streams each."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    @staticmethod
    def tolerated_errors(run: Run, plan: Plan) -> int:
        """nginx ends an HTTP/2 connection after 1000 requests (keepalive_requests), and h2load
        counts the streams it had in flight then as errors, where a browser sends them again."""
        return plan.streams * (run.requests // 1000 + plan.connections)

    def run(self, url: str, plan: Plan, headers: dict[str, str] | None = None) -> Run:
        log = self.workdir / f"h2load-{secrets.token_hex(4)}.log"
        command = ["h2load", f"-t{plan.threads}", f"-c{plan.connections}", f"-m{plan.streams}",
                   f"-D{plan.seconds:g}", "--log-file", str(log)]
        for key, value in (headers or {}).items():
            command += ["-H", f"{key}: {value}"]
        result = subprocess.run([*command, url], capture_output=True, text=True, timeout=plan.seconds + 60)
        finished = re.search(r"^finished in ([\d.]+)(m?s),", result.stdout, re.M)
        done = re.search(r"^requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, \d+ failed, "
                         r"(\d+) errored, (\d+) timeout", result.stdout, re.M)
        codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", result.stdout, re.M)
        if result.returncode != 0 or not (finished and done and codes):
            raise RuntimeError(f"h2load failed: {result.stdout.strip()} {result.stderr.strip()}")
        latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") >= 2)
        log.unlink()
        seconds = float(finished[1]) / (1000 if finished[2] == "ms" else 1)
        errors = int(done[2]) + int(done[3])
        answered = int(done[1]) - errors
        # the status counts may include answers that came after the end (h2load stops its clients then)
        return Run(answered, seconds, sum(int(code) for code in codes.groups()[1:]), errors,
                   _percentile(latencies, 50) / 1000, _percentile(latencies, 99) / 1000)


def _percentile(values: list[float], percent: float) -> float:
    """The nearest-rank percentile of sorted `values` (0 when there are none)."""
    if not values:
        return 0
    return values[max(math.ceil(len(values) * percent / 100) - 1, 0)]


def _all_ok(run: Run, what: str, tolerated_errors: int = 0) -> Run:
    """A row of a legitimate client must be all 2xx, or it measured something else."""
    if run.non_2xx or run.socket_errors > tolerated_errors or not run.requests:
        raise RuntimeError(f"{what}: {run.non_2xx} non-2xx answers and {run.socket_errors} socket errors "
                           f"in {run.requests} requests")
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _insecure() -> ssl.SSLContext:
    """TLS without checking the certificate: the benchmark's own self-signed one, on an address it created."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2, context=_insecure())
            return
        except urllib.error.HTTPError:
            return  # it answers (a 401 is an answer)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers at {url}") from None
            time.sleep(0.2)


def _status(url: str, authorization: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    try:
        return urllib.request.urlopen(request, timeout=60, context=_insecure()).status
    except urllib.error.HTTPError as exc:
        return exc.code


def _container_cpu(container) -> Callable[[], float]:
    """The container's CPU time so far, in seconds."""
    return lambda: container.stats(stream=False, one_shot=True)["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9


def _process_cpu(pid: int) -> Callable[[], float]:
    """The process's CPU time so far, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    return lambda: sum(int(f) for f in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]) / ticks


def _ip(container, network: str) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def _sleep_until(moment: float) -> None:
    time.sleep(max(moment - time.time(), 0))


class Setups:
    """Everything the rows load, started once; `close` removes it all."""

    def __init__(self, client: docker.DockerClient, workdir: Path, nginx_image: str, upstream_image: str,
                 extra_labels: dict[str, str]) -> None:
        self.client, self.workdir = client, workdir
        self.caddy: subprocess.Popen | None = None
        self.config = load_config("/nonexistent", environ={
            "RUMISTACK_PROJECT": f"rumibench-{uuid.uuid4().hex[:8]}",
            "RUMISTACK_NGINX_IMAGE": nginx_image,
            "RUMITALK_IMAGE": upstream_image,
            # the base of the verifier's image, which `up` builds (no registry here)
            "RUMISTACK_TOOLS_BASE_IMAGE": images.PYTHON,
            # the static upstream needs no database: no MongoDB in the stack
            "RUMISTACK_MONGO_URI": "mongodb://unused.invalid:27017/RumiTalk",
            "RUMISTACK_HTTP_PORT": str(_free_port()),
            "RUMISTACK_HTTPS_PORT": str(_free_port()),
            "RUMISTACK_BIND_ADDRESS": "127.0.0.1",
            # RUMISTACK_TLS stays at its default, self-signed: HTTPS as every user runs it
            "RUMISTACK_STATE_DIR": str(workdir / "state"),
            # /api/ takes a bearer token the upstream confirms (it answers 200 to every path)
            "RUMISTACK_STRICT_API": "true",
        })
        self.labels = {**labels(self.config.project), **extra_labels}
        self.users = UserFile(self.config.users_file)
        self.clients_network = None

    def start(self, plan: Plan, log: Callable[[str], None]) -> None:
        self.users.add(USER, PASSWORD)  # bcrypt, cost 12
        self.refused_users = REFUSED_USERS[:max(min(plan.refusals, len(REFUSED_USERS)), 1)]
        for user in self.refused_users:
            self.users.add(user, secrets.token_urlsafe(16))
        log("starting rumistack's stack (HTTPS, the static upstream in RumiTalk's place)")
        stack.up(self.config, self.users)
        network = network_name(self.config)
        self.nginx = self.client.containers.get(container_name(self.config, "nginx"))
        self.nginx_version = self.nginx.exec_run(["nginx", "-v"]).output.decode().strip().split("/")[-1]
        upstream = self.client.containers.get(container_name(self.config, UPSTREAM_SERVICE))
        # the server's CPU: every service of the stack but the upstream (so a
        # verifier of its own counts, whatever the stack's services are)
        served = [c for c in self.client.containers.list(
            filters={"label": [f"{LABEL_PROJECT}={self.config.project}", LABEL_SERVICE]})
            if c.labels[LABEL_SERVICE] != UPSTREAM_SERVICE]
        self.services = sorted(c.labels[LABEL_SERVICE] for c in served)
        counters = [_container_cpu(c) for c in served]
        self.stack_cpu = lambda: sum(counter() for counter in counters)
        self.upstream_cpu = _container_cpu(upstream)
        self.upstream_url = f"http://{_ip(upstream, network)}:3080{ASSET}"
        self.rumistack_url = f"https://{_ip(self.nginx, network)}"

        # the refusals' and the flood's containers are on a network of their own, each its own address
        self.clients_network = self.client.networks.create(f"{network}-clients", driver="bridge", labels=self.labels)
        self.clients_network.connect(self.nginx)
        self.flood_host = _ip(self.nginx, self.clients_network.name)

        log("starting nginx with plain auth_basic")
        plain = self.client.containers.create(
            self.config.nginx_image, ["nginx", "-c", "/etc/bench/nginx.conf", "-g", "daemon off;"],
            name=f"{self.config.project}-auth-basic", labels=self.labels, network=network,
        )
        plain.put_archive("/", archive({
            "nginx.conf": File((BENCH / "nginx-auth-basic.conf").read_bytes(), gid=NGINX_GID),
            "htpasswd": File(self.users.content(), gid=NGINX_GID),
        }, prefix="/etc/bench"))
        plain.start()
        self.plain_url = f"http://{_ip(plain, network)}/"
        self.plain_cpu = _container_cpu(plain)

        log("starting Caddy (with the stack's certificate)")
        noauth_port, auth_port = _free_port(), _free_port()
        hash_ = next(line for line in self.users.content().decode().splitlines()
                     if line.startswith(f"{USER}:")).split(":", 1)[1]
        home = self.workdir / "caddy"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home),
               "NOAUTH_PORT": str(noauth_port), "AUTH_PORT": str(auth_port), "UPSTREAM": self.upstream_url.split("/")[2],
               "CERT_FILE": str(self.config.self_signed_dir / SELF_SIGNED_CERT),
               "KEY_FILE": str(self.config.self_signed_dir / SELF_SIGNED_KEY),
               "BENCH_USER": USER, "HASH_BASE64": base64.b64encode(hash_.encode()).decode()}
        self.caddy = subprocess.Popen(["caddy", "run", "--config", str(BENCH / "Caddyfile"), "--adapter", "caddyfile"],
                                      env=env, stdout=(home / "log").open("w"), stderr=subprocess.STDOUT)
        self.caddy_cpu = _process_cpu(self.caddy.pid)
        self.caddy_noauth_url = f"https://127.0.0.1:{noauth_port}/"
        self.caddy_auth_url = f"https://127.0.0.1:{auth_port}/"

        for url in (self.upstream_url, self.rumistack_url + "/health", self.plain_url, self.caddy_noauth_url, self.caddy_auth_url):
            _wait_for(url)

    def diagnosis(self) -> str:
        """What the stack's nginx logged last, but its successes: why a row failed."""
        lines = [line for line in self.nginx.logs(tail=2000).decode(errors="replace").splitlines()
                 if '" 200 ' not in line and '" 204 ' not in line]
        return "the stack's nginx logged: " + (" | ".join(lines[-8:]) or "nothing but successes")

    def close(self) -> None:
        if self.caddy is not None:
            self.caddy.terminate()
            self.caddy.wait(timeout=10)
        for container in self.client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={self.config.project}"}):
            if LABEL_SERVICE not in container.labels:  # the benchmark's own: plain auth_basic, the flood
                container.remove(force=True)
        if self.clients_network is not None:
            self.clients_network.disconnect(self.nginx, force=True)
            self.clients_network.remove()
        stack.down(self.config, remove_volumes=True)


@dataclass
class Refusals:
    wrong_password: list[float]  # seconds
    unknown_user: list[float]
    other: Counter  # answers other than 401 (throttled), by status

    def verdict(self) -> str:
        if len(self.wrong_password) < 2 or len(self.unknown_user) < 2:
            return (f"NOT MEASURED: equal refusals: too few 401 answers ({len(self.wrong_password)} and "
                    f"{len(self.unknown_user)}; other answers: {dict(self.other)})")
        wrong, unknown = statistics.median(self.wrong_password), statistics.median(self.unknown_user)
        apart = max(wrong, unknown) / min(wrong, unknown) - 1
        return (f"{'PASS' if apart <= GOAL_REFUSALS else 'FAIL'}: equal refusals: a wrong password for an existing "
                f"user is refused in {wrong * 1000:.1f} ms, an unknown user in {unknown * 1000:.1f} ms (medians), "
                f"{apart:.0%} apart (goal: within {GOAL_REFUSALS:.0%})")

    def table(self) -> str:
        lines = ["| a refusal (401), one at a time | median | p90 | samples |", "|---|---:|---:|---:|"]
        for name, times in (("an existing user, a wrong password", self.wrong_password),
                            ("an unknown user", self.unknown_user)):
            ordered = sorted(times)
            lines.append(f"| {name} | {statistics.median(ordered) * 1000 if ordered else 0:.1f} ms "
                         f"| {_percentile(ordered, 90) * 1000:.1f} ms | {len(ordered)} |")
        if self.other:
            lines += ["", "not timed, answered otherwise: " + ", ".join(f"{count} {status}" for status, count in
                                                                      sorted(self.other.items()))]
        return "\n".join(lines)


# each refusal container runs this: once the file `after` appears in
# /control, the given credentials one at a time, `spacing` seconds from the
# start of one to the next, each timed from the request to the end of the
# answer on a connection whose TLS handshake is done; then the times go into
# /control/<its name>.json, which the next container waits for
REFUSAL_CLIENT = r"""
import base64, http.client, json, os, ssl, sys, time
host, spacing, samples, after = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
give_up = time.time() + 600
while not os.path.exists(f"/control/{after}"):
    if time.time() > give_up:
        sys.exit(f"/control/{after} never appeared")
    time.sleep(0.05)
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
timed = []
for user, password in samples:
    started = time.time()
    connection = http.client.HTTPSConnection(host, 443, timeout=30, context=context)
    connection.connect()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    before = time.perf_counter()
    connection.request("GET", "/", headers={"Authorization": "Basic " + token})
    response = connection.getresponse()
    response.read()
    timed.append([response.status, time.perf_counter() - before])
    connection.close()
    time.sleep(max(started + spacing - time.time(), 0))
me = os.uname().nodename
with open(f"/control/.{me}", "w") as file:
    json.dump(timed, file)
os.replace(f"/control/.{me}", f"/control/{me}.json")
"""


def _client(s: Setups, image: str, name: str, script: str, *args: str, **options):
    """A container of this run on the clients network (an address of its own) running a Python script."""
    return s.client.containers.run(image, ["python3", "-c", script, *args], detach=True, name=f"{s.config.project}-{name}",
                                   hostname=name, labels=s.labels, network=s.clients_network.name, **options)


def _output(container) -> str:
    """What the finished container wrote to stdout; it is removed."""
    if container.wait(timeout=120)["StatusCode"] != 0:
        raise RuntimeError(f"the container {container.name} failed: {container.logs().decode()[-500:]}")
    output = container.logs(stderr=False).decode().strip()
    container.remove()
    return output


def refusals(s: Setups, plan: Plan, image: str, log: Callable[[str], None]) -> Refusals:
    """Wrong passwords for existing users and any password for unknown users, in turn, one at a time,
    `refusal_spacing` apart, from `refusal_addresses` containers one after the other: under the limits
    per address, per user name and in total, so each sample is a verification."""
    log(f"{2 * plan.refusals} refusals, one at a time, {plan.refusal_spacing:g} s apart, "
        f"from {plan.refusal_addresses} addresses")
    kinds, samples = [], []
    for n in range(2 * plan.refusals):
        existing = (n % 2 == 0) == (n // 2 % 2 == 0)  # ABBA order: neither kind always goes first
        kinds.append(existing)
        samples.append((s.refused_users[n // 2 % len(s.refused_users)] if existing else f"nobody{n}",
                        f"wrong password {n}"))
    # all the containers run at once, so each keeps an address of its own (a stopped container's
    # address goes to the next one started), and each starts when the one before it is done
    control = s.workdir / "refusals"
    control.mkdir()
    share = math.ceil(len(samples) / plan.refusal_addresses)
    containers = [_client(s, image, f"refusals{k}", REFUSAL_CLIENT, s.flood_host, str(plan.refusal_spacing),
                          json.dumps(samples[k * share:(k + 1) * share]), f"refusals{k - 1}.json" if k else "go",
                          volumes={str(control): {"bind": "/control", "mode": "rw"}})
                  for k in range(plan.refusal_addresses)]
    if len({_ip(container, s.clients_network.name) for container in containers}) < len(containers):
        raise RuntimeError("the refusals' containers share an address")
    (control / "go").touch()
    timed = []
    for k, container in enumerate(containers):
        _output(container)
        timed += json.loads((control / f"refusals{k}.json").read_text())
    result = Refusals([], [], Counter())
    for existing, (status, seconds) in zip(kinds, timed):
        if status == 401:
            (result.wrong_password if existing else result.unknown_user).append(seconds)
        else:
            result.other[status] += 1
    return result


# each flood container runs this: a bounded loop of wrong passwords for one
# user, paced, in the time windows that the benchmark writes into
# /control/plan.json as it goes. after each answer it writes what it got
# into /control/<its name>.json, and whether a request of its is in flight
FLOOD_CLIENT = r"""
import base64, http.client, json, math, os, ssl, sys, time
host, user, me, most = sys.argv[1], sys.argv[2], os.uname().nodename, int(sys.argv[3])
give_up = time.time() + 600
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
answers, sent, connection, last = {}, 0, None, None

def report(busy):
    with open(f"/control/.{me}", "w") as file:
        json.dump({"answers": answers, "busy": busy}, file)
    os.replace(f"/control/.{me}", f"/control/{me}.json")

def plan():
    try:
        with open("/control/plan.json") as file:
            return json.load(file)
    except (OSError, ValueError):
        return {"windows": [], "rate": 1, "done": False}

report(False)
while time.time() < give_up and sent < most:
    now, current = time.time(), plan()
    window = next(((start, end) for start, end in current["windows"] if start <= now < end), None)
    if window is None:
        if connection is not None:
            connection.close()
            connection = None
        if current["done"]:
            break
        time.sleep(0.05)
        continue
    start, end = window
    # paced: the first free slot of the window from now on, never a burst to catch up
    slot = math.ceil((now - start) * current["rate"])
    if (start, slot) == last:
        slot += 1
    at = start + slot / current["rate"]
    if at >= end:
        time.sleep(min(end - now, 0.05))
        continue
    time.sleep(max(at - time.time(), 0))
    last = (start, slot)
    report(True)
    try:
        if connection is None:
            connection = http.client.HTTPSConnection(host, 443, timeout=10, context=context)
        token = base64.b64encode(f"{user}:guess {me} {sent}".encode()).decode()
        connection.request("GET", "/", headers={"Authorization": "Basic " + token})
        response = connection.getresponse()
        response.read()
        answer = str(response.status)
        if response.will_close:
            connection.close()
            connection = None
    except (OSError, http.client.HTTPException) as exc:
        answer = type(exc).__name__
        connection = None
    answers[answer] = answers.get(answer, 0) + 1
    sent += 1
    report(False)
print(json.dumps(answers))
"""


@dataclass
class Flood:
    alone: Row
    during: Row

    def verdicts(self, plan: Plan) -> list[str]:
        kept = statistics.median(d.rate / a.rate if a.rate else 0 for a, d in zip(self.alone.runs, self.during.runs))
        # a round in which no request was answered at all has no p99: longer than any
        p99 = statistics.median(d.p99_ms / a.p99_ms if d.requests and a.requests else math.inf
                                for a, d in zip(self.alone.runs, self.during.runs))
        refused = sum(run.non_2xx + run.socket_errors for run in (*self.alone.runs, *self.during.runs))
        silent = sum(not run.requests for run in self.during.runs)
        ok = kept >= GOAL_FLOOD_KEPT and p99 <= GOAL_FLOOD_P99 and not refused
        return [f"{'PASS' if ok else 'FAIL'}: during a wrong-password flood from {plan.flood_addresses} addresses, "
                f"the cached user keeps {kept:.0%} of its throughput alone (goal: at least {GOAL_FLOOD_KEPT:.0%}), "
                f"and its p99 is {f'{p99:.1f}x' if math.isfinite(p99) else 'more than a round long, against'} "
                f"its p99 alone (goal: at most {GOAL_FLOOD_P99:g}x); median of "
                f"{len(self.during.runs)} round(s); {refused} of its requests refused or failed"
                + (f"; in {silent} round(s) not one of its requests was answered" if silent else "")]


def flood(s: Setups, wrk: Wrk, plan: Plan, image: str, log: Callable[[str], None]) -> Flood:
    """The cached user alone and during a flood of wrong passwords for its own user name from
    `flood_addresses` containers, alternately, after a first flood window for the burst the limits allow.
    "Alone" starts once no request of the flood is in flight any more (at most `FLOOD_QUIET` s after a
    window's end): verifications queued in the server are the flood's too."""
    good = {"Authorization": basic(USER, PASSWORD)}
    control = s.workdir / "flood"
    control.mkdir()
    control_plan = {"windows": [], "rate": plan.flood_rate, "done": False}

    def publish() -> None:
        (control / ".plan").write_text(json.dumps(control_plan))
        (control / ".plan").replace(control / "plan.json")

    def window(seconds: float) -> tuple[float, float]:
        start = time.time() + 0.2
        control_plan["windows"].append((start, start + seconds))
        publish()
        return start, start + seconds

    def states() -> list[dict]:
        return [json.loads((control / f"flood{n}.json").read_text()) for n in range(plan.flood_addresses)
                if (control / f"flood{n}.json").exists()]

    waits = []

    def quiet() -> None:
        began = time.time()
        while time.time() < began + FLOOD_QUIET and any(state["busy"] for state in states()):
            time.sleep(0.1)
        waits.append(time.time() - began)

    publish()
    most = math.ceil(plan.flood_rate * (plan.flood_warmup + plan.flood_rounds * (plan.seconds + 2))) + 1
    log(f"starting {plan.flood_addresses} flood containers")
    mounts = {str(control): {"bind": "/control", "mode": "rw"}}
    containers = [_client(s, image, f"flood{n}", FLOOD_CLIENT, s.flood_host, USER, str(most), volumes=mounts)
                  for n in range(plan.flood_addresses)]
    deadline = time.time() + 60
    while len(states()) < len(containers):
        if time.time() > deadline:
            raise RuntimeError("the flood's containers did not start within a minute")
        time.sleep(0.2)
    log(f"the flood: {plan.flood_warmup:g} s for its burst of verifications, then {plan.flood_rounds} round(s) "
        "of the cached user alone and during the flood")
    _sleep_until(window(plan.flood_warmup)[1])
    alone = Row("rumistack auth (cached), alone, between the flood's rounds")
    during = Row(f"rumistack auth (cached), during a wrong-password flood from {plan.flood_addresses} addresses",
                 baseline=alone)
    flood_seconds = plan.flood_warmup
    for number in range(plan.flood_rounds):
        log(f"flood round {number + 1} of {plan.flood_rounds}")
        # a refused request of the cached user is part of the result (the verdict counts it), not a
        # failure of the benchmark: a limit per user name could lock the cached user out
        quiet()
        alone.runs.append(wrk.run(s.rumistack_url + "/", plan, headers=good))
        # the cached user is measured from a second into the window to a second before its end
        start, end = window(plan.seconds + 2)
        flood_seconds += plan.seconds + 2
        _sleep_until(start + 1)
        during.runs.append(wrk.run(s.rumistack_url + "/", plan, headers=good))
        _sleep_until(end)
    control_plan["done"] = True
    publish()
    answers: Counter = Counter()
    for container in containers:
        answers.update(json.loads(_output(container).splitlines()[-1]))
    sent = sum(answers.values())
    alone.note = (f"each round once the flood's last request was answered: {statistics.median(waits):.1f} s "
                  "after its window's end (median)")
    during.note = (f"{sent:,} wrong passwords for its own user name, {sent / flood_seconds:,.0f} a second in all, "
                   f"at most {plan.flood_rate:g} a second from each address; the answers: "
                   + ", ".join(f"{count:,} {answer}" for answer, count in sorted(answers.items())))
    return Flood(alone, during)


@dataclass
class Results:
    rows: list[Row]  # in the table's order
    no_auth: Row
    verdicts: list[str]
    refusals: Refusals


def measure(s: Setups, wrk: Wrk, h2: H2load, plan: Plan, client_image: str, log: Callable[[str], None]) -> Results:
    good = {"Authorization": basic(USER, PASSWORD)}
    for url in (s.rumistack_url + "/", s.caddy_auth_url):  # each verifies the credential once, then has it cached
        assert _status(url, good["Authorization"]) == 200, url
    bearer = {"Authorization": "Bearer bench-token"}
    assert _status(s.rumistack_url + "/api" + ASSET, bearer["Authorization"]) == 200  # confirmed once, then cached

    refused = refusals(s, plan, client_image, log)

    def load(tool: Wrk | H2load, url: str, cpu: Callable[[], float], headers: dict[str, str] | None = None,
             connections: int | None = None) -> Callable[[Plan], Run]:
        def measured(plan: Plan) -> Run:
            if connections:
                plan = dataclasses.replace(plan, threads=1, connections=connections)
            before = cpu()
            run = tool.run(url, plan, headers=headers)
            after = cpu()
            try:
                _all_ok(run, url, H2load.tolerated_errors(run, plan) if isinstance(tool, H2load) else 0)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; {s.diagnosis()}") from None
            run.cpu_us = (after - before) / run.requests * 1e6
            return run
        return measured

    def plain_auth_basic(plan: Plan) -> Run:
        # bcrypt is the bottleneck: more connections than workers only queue
        # (and with 16, no request would finish within a round); at least 3 s,
        # so that some finish on a busy machine too
        run = load(wrk, s.plain_url, s.plain_cpu, good, connections=2)(dataclasses.replace(plan, seconds=max(plan.seconds, 3)))
        # the requests wrk left queued still run bcrypt: a request on a new
        # connection to each worker is answered after them
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: _status(s.plain_url, good["Authorization"]), range(4)))
        return run

    upstream = Row("upstream, direct (HTTP)")
    no_auth = Row("nginx, no auth (the same nginx, an exempt path)")
    plain = Row("nginx auth_basic, bcrypt cost 12 (HTTP)", "bcrypt on every request; 2 connections, one per worker")
    cached = Row("rumistack auth (cached), bcrypt cost 12")
    strict = Row("rumistack strict API mode, cached Bearer token", "/api/ with a token the upstream confirmed once")
    caddy = Row("Caddy, no auth")
    caddy_auth = Row("Caddy basic_auth (cached), bcrypt cost 12")
    h2_no_auth = Row("HTTP/2: nginx, no auth (an exempt path)")
    h2_cached = Row("HTTP/2: rumistack auth (cached)", baseline=h2_no_auth)
    h2_caddy = Row("HTTP/2: Caddy, no auth", baseline=h2_no_auth)
    h2_caddy_auth = Row("HTTP/2: Caddy basic_auth (cached)", baseline=h2_no_auth)
    exempt = s.rumistack_url + "/manifest.webmanifest"
    loads = [(upstream, load(wrk, s.upstream_url, s.upstream_cpu)),
             (no_auth, load(wrk, exempt, s.stack_cpu)),
             (cached, load(wrk, s.rumistack_url + "/", s.stack_cpu, good)),
             (strict, load(wrk, s.rumistack_url + "/api" + ASSET, s.stack_cpu, bearer)),
             (caddy, load(wrk, s.caddy_noauth_url, s.caddy_cpu)),
             (caddy_auth, load(wrk, s.caddy_auth_url, s.caddy_cpu, good)),
             (h2_no_auth, load(h2, exempt, s.stack_cpu)),
             (h2_cached, load(h2, s.rumistack_url + "/", s.stack_cpu, good)),
             (h2_caddy, load(h2, s.caddy_noauth_url, s.caddy_cpu)),
             (h2_caddy_auth, load(h2, s.caddy_auth_url, s.caddy_cpu, good)),
             (plain, plain_auth_basic)]

    # every row once a round, the order reversed every other round, so no
    # auth and cached auth always run next to each other
    auth_ratios, strict_ratios, h2_ratios = [], [], []
    for number in range(plan.rounds):
        log(f"round {number + 1} of {plan.rounds}")
        for row, run in loads if number % 2 == 0 else loads[::-1]:
            row.runs.append(run(plan))
        auth_ratios.append(cached.runs[-1].rate / no_auth.runs[-1].rate)
        strict_ratios.append(strict.runs[-1].rate / no_auth.runs[-1].rate)
        h2_ratios.append(h2_cached.runs[-1].rate / h2_no_auth.runs[-1].rate)

    flooded = flood(s, wrk, plan, client_image, log)

    ratio = statistics.median(auth_ratios)
    extra = statistics.median(c.cpu_us - n.cpu_us for c, n in zip(cached.runs, no_auth.runs))
    return Results(
        rows=[upstream, no_auth, plain, cached, strict, caddy, caddy_auth,
              h2_no_auth, h2_cached, h2_caddy, h2_caddy_auth, flooded.alone, flooded.during],
        no_auth=no_auth,
        verdicts=[
            f"{'PASS' if ratio >= GOAL_CACHED else 'FAIL'}: over HTTPS, authenticated at {ratio:.0%} of no auth "
            f"through the same nginx, the median of the rounds (goal: at least {GOAL_CACHED:.0%})",
            *flooded.verdicts(plan),
            refused.verdict(),
            f"over HTTP/2, authenticated at {statistics.median(h2_ratios):.0%} of no auth",
            f"strict API mode, cached Bearer tokens at {statistics.median(strict_ratios):.0%} of no auth",
            f"the cached check costs the stack {extra:.1f} µs of CPU a request (median of the rounds' "
            f"differences), on {no_auth.median().cpu_us:.1f} µs without auth",
        ],
        refusals=refused,
    )


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _cpu(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:.1f} µs" if us < 1000 else f"{us / 1000:,.0f} ms"


def table(results: Results) -> str:
    lines = ["| setup | req/s | p50 | p99 | vs no auth | server CPU a request | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in results.rows:
        run = row.median()
        base = (row.baseline or results.no_auth).median().rate
        # no answer at all in the round: no latency to show
        p50, p99 = (f"{run.p50_ms:.2f} ms", f"{run.p99_ms:.2f} ms") if run.requests else ("-", "-")
        lines.append(f"| {row.name} | {_rate(run.rate)} | {p50} | {p99} "
                     f"| {f'{run.rate / base:.0%}' if base else '-'} | {_cpu(run.cpu_us)} | {row.note} |")
    return "\n".join(lines)


def summary(text: str) -> str:
    """The README's part of a run's text: its table's header, the rows README_ROWS names, the verdicts."""
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("|")][:2]
    rows = [line for line in lines if line.startswith(tuple(f"| {name}" for name in README_ROWS))]
    verdicts = [line for line in lines if line.startswith(("- PASS", "- FAIL"))]
    return "\n".join([*header, *rows, "", *verdicts, "", "![the whole table as a chart](bench/latest.png)"]) + "\n"


def chart(results: Results, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = [row.name for row in results.rows][::-1]
    rates = [row.median().rate for row in results.rows][::-1]
    bases = [(row.baseline or results.no_auth).median().rate for row in results.rows][::-1]
    colours = ["#c0392b" if "rumistack" in name else "#7f8c8d" for name in names]
    figure, axes = pyplot.subplots(figsize=(11, 6))
    bars = axes.barh(names, rates, color=colours)
    axes.set_xscale("log")
    axes.set_xlabel("requests per second (log scale; higher is better)")
    axes.set_title(title, fontsize=10)
    axes.tick_params(axis="y", labelsize=7)
    for bar, rate, base in zip(bars, rates, bases):
        # a row with no answer at all has no bar on a log scale: its label says so
        label = f"{_rate(rate)}  ({f'{rate / base:.0%}' if base else '-'})" if rate else "no answer"
        axes.text(max(bar.get_width(), 0.5) * 1.08, bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    axes.set_xlim(left=0.5, right=max(rates) * 8)
    figure.tight_layout()
    # the longest names need more room than tight_layout leaves them
    figure.subplots_adjust(left=0.42)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _version(command: list[str], word: int = -1) -> str:
    return subprocess.run(command, capture_output=True, text=True).stdout.split()[word]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="one short round of every row: checks it works, measures nothing")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="where the table and the chart go")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra label on the Docker objects the benchmark creates itself")
    parser.add_argument("--nginx-image", help=f"the nginx image for rumistack and plain auth_basic (default: {images.NGINX})")
    parser.add_argument("--upstream-image", help=f"the static upstream in RumiTalk's place (default: {images.STATIC_UPSTREAM})")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    extra_labels = dict(item.split("=", 1) for item in args.label)

    began = time.monotonic()

    def log(message: str) -> None:
        elapsed = int(time.monotonic() - began)
        print(f"- [{elapsed // 60}:{elapsed % 60:02}] {message}", file=sys.stderr, flush=True)

    client = docker.from_env()
    pinned = images.ensure_images(client, log=log)  # the images of this checkout's recipes
    nginx_image = args.nginx_image or pinned[images.NGINX]
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="rumibench-") as tmp:
        setups = Setups(client, Path(tmp), nginx_image, args.upstream_image or pinned[images.STATIC_UPSTREAM],
                        extra_labels)
        try:
            setups.start(plan, log)
            # the refusals' and the flood's clients: Python from the local Debian base, in the nginx image
            results = measure(setups, Wrk(Path(tmp)), H2load(Path(tmp)), plan, nginx_image, log)
        finally:
            setups.close()
        # the browser rows after the others: Chromium would load the machine under their rounds
        flows = BrowserFlows(client, Path(tmp), {
            "nginx": nginx_image, "rumitalk": pinned[images.STUB],
            "mongodb": pinned[images.MONGO], "ai": pinned[images.AI],
            "python": pinned[images.PYTHON]}, _free_port, setups.labels, plan.rounds)
        try:
            flows.start(log)
            browser_rows = flows.measure(log)
        finally:
            flows.close()

    caddy_version = _version(["caddy", "version"], 0)
    how = (f"{'smoke run, measures nothing: ' if plan.smoke else ''}{os.cpu_count()} cores, shared with other work; "
           f"HTTPS with the stack's self-signed ECDSA certificate, for nginx and Caddy alike; the stack's services: "
           f"{', '.join(setups.services)} (server CPU: all of them); nginx {setups.nginx_version}, "
           f"Caddy {caddy_version}, {_version(['h2load', '--version'])}; wrk {plan.threads} threads, {plan.connections} connections; "
           f"h2load {plan.threads} threads, {plan.connections} connections, {plan.streams} streams each (not "
           "counted: the streams in flight when nginx ends a connection after its 1000 requests); "
           f"median of {plan.rounds} round(s) of {plan.seconds:g} s a row; load average {load_before} before")
    verdicts = [*results.verdicts, browserflow.verdict(browser_rows)]
    text = "\n".join([table(results), "", results.refusals.table(), "", browserflow.table(browser_rows), "", how, "",
                      *(f"- {v}" for v in verdicts)]) + "\n"
    print(text)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    chart(results, args.out / "chart.png", "bench/run" + (" --smoke (measures nothing)" if plan.smoke else ""))
    if not plan.smoke and args.out == BENCH / "results":
        shutil.copy(args.out / "chart.png", BENCH / "latest.png")
        page = ROOT / DOCS_PAGE
        block = text + "\n![the table as a chart](../bench/latest.png)\n"
        page.write_text(DOCS_BLOCK.sub(lambda m: m[1] + block + m[2], page.read_text()))
        readme = ROOT / "README.md"
        readme.write_text(DOCS_BLOCK.sub(lambda m: m[1] + summary(text) + m[2], readme.read_text()))
        log(f"updated the tables in {DOCS_PAGE} and README.md, and bench/latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark: Basic Auth through rumistack's nginx next to no auth, nginx's
plain auth_basic, a wrong-password flood and Caddy, side by side on this
machine, and a real browser's flow to a streamed reply with and without
auth (bench/browserflow.py). Run it with bench/run, which provisions what
it needs.

Everything runs in one go: rumistack's stack (`stack.up`, the real rendered
config) with a static asset server in RumiTalk's place, nginx with plain
auth_basic and Caddy in front of the same upstream. wrk loads each setup in
short rounds, every row once a round, so a busy moment on the machine spreads
over all rows; each row shows its median round. Load goes only to loopback
and to containers on the networks this run creates.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import functools
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker

from rumistack import stack
from rumistack.config import load_config
from rumistack.layout import NGINX_GID
from rumistack.spec import container_name, labels, network_name
from rumistack.users import UserFile
from rumistack.volumes import File, archive

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
import images  # noqa: E402  (the local images, built the way the tests build them)
from browserflow import BrowserFlows  # noqa: E402
import browserflow  # noqa: E402

USER, PASSWORD = "alice", "correct horse battery staple"
ASSET = "/asset.js"  # any path: the upstream answers every one with the same 1 KiB asset
DOCS_PAGE = "docs/auth-cache.md"  # a full run rewrites its table and chart, between these markers
DOCS_BLOCK = re.compile(r"(<!-- bench:start -->\n).*?(<!-- bench:end -->)", re.S)


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float  # per row and round
    threads: int
    connections: int
    flood_warmup: float  # the flood runs this long before its rounds: its burst of verifications
    smoke: bool


FULL = Plan(rounds=5, seconds=3, threads=2, connections=16, flood_warmup=6, smoke=False)
SMOKE = Plan(rounds=1, seconds=1, threads=1, connections=4, flood_warmup=4, smoke=True)


@dataclass
class Run:
    """One wrk run's numbers."""

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

    def median(self) -> Run:
        """The run of median rate (the lower one of an even count)."""
        return sorted(self.runs, key=lambda run: run.rate)[(len(self.runs) - 1) // 2]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _script(requests_part: str = "") -> str:
    return requests_part + (BENCH / "report.lua").read_text()


@functools.cache
def _flood_script(count: int = 20000) -> str:
    """wrk requests with a new wrong password each (a guesser), headers made up front so wrk stays cheap."""
    headers = ",\n".join(f'"{basic(USER, f"guess {n}")}"' for n in range(count))
    return _script(
        f"local guesses = {{\n{headers}\n}}\nlocal n = 0\n"
        "request = function()\n  n = n % #guesses + 1\n"
        '  return wrk.format("GET", "/", {Authorization = guesses[n]})\nend\n'
    )


class Wrk:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def start(self, url: str, plan: Plan, seconds: float, headers: dict[str, str] | None = None,
              script: str | None = None, threads: int | None = None) -> subprocess.Popen:
        path = self.workdir / f"wrk-{secrets.token_hex(4)}.lua"
        path.write_text(script or _script())
        command = ["wrk", f"-t{threads or plan.threads}", f"-c{plan.connections}", f"-d{seconds:g}s",
                   "--timeout", "10s", "-s", str(path)]
        for key, value in (headers or {}).items():
            command += ["-H", f"{key}: {value}"]
        return subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @staticmethod
    def result(process: subprocess.Popen) -> Run:
        output, _ = process.communicate()
        lines = [line for line in output.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed: {output.strip()}")
        data = json.loads(lines[-1])
        return Run(data["requests"], data["duration_us"] / 1e6, data["non_2xx"], data["socket_errors"],
                   data["p50_us"] / 1000, data["p99_us"] / 1000)

    def run(self, url: str, plan: Plan, **kwargs) -> Run:
        return self.result(self.start(url, plan, plan.seconds, **kwargs))


def _all_ok(run: Run, what: str, may_starve: bool = False) -> Run:
    """A row of a legitimate client must be all 2xx, or it measured something
    else; and, unless it may starve, have answers at all."""
    if run.non_2xx or run.socket_errors or not (run.requests or may_starve):
        raise RuntimeError(f"{what}: {run.non_2xx} non-2xx answers and {run.socket_errors} socket errors "
                           f"in {run.requests} requests")
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (a 401 is an answer)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers at {url}") from None
            time.sleep(0.2)


def _status(url: str, authorization: str) -> int:
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": authorization}), timeout=60).status
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
            "RUMISTACK_BIND_ADDRESS": "127.0.0.1",
            # plain HTTP: the rows compare auth, not TLS
            "RUMISTACK_TLS": "off",
            "RUMISTACK_STATE_DIR": str(workdir / "state"),
            # /api/ takes a bearer token the upstream confirms (it answers 200 to every path)
            "RUMISTACK_STRICT_API": "true",
        })
        self.labels = {**labels(self.config.project), **extra_labels}
        self.users = UserFile(self.config.users_file)

    def start(self, log: Callable[[str], None]) -> None:
        self.users.add(USER, PASSWORD)  # bcrypt, cost 12
        log("starting rumistack's stack (nginx, the static upstream in RumiTalk's place)")
        stack.up(self.config, self.users)
        network = network_name(self.config)
        self.nginx = self.client.containers.get(container_name(self.config, "nginx"))
        self.nginx_version = self.nginx.exec_run(["nginx", "-v"]).output.decode().strip().split("/")[-1]
        upstream = self.client.containers.get(container_name(self.config, "rumitalk"))
        self.nginx_cpu, self.upstream_cpu = _container_cpu(self.nginx), _container_cpu(upstream)
        self.upstream_url = f"http://{_ip(upstream, network)}:3080{ASSET}"
        self.rumistack_url = f"http://{_ip(self.nginx, network)}"

        # the flood comes from another address: the nginx container on a second network
        flood_network = self.client.networks.create(f"{network}-flood", driver="bridge", labels=self.labels)
        flood_network.connect(self.nginx)
        self.flood_url = f"http://{_ip(self.nginx, flood_network.name)}/"

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

        log("starting Caddy")
        noauth_port, auth_port = _free_port(), _free_port()
        hash_ = self.users.content().decode().strip().split(":", 1)[1]
        home = self.workdir / "caddy"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home),
               "NOAUTH_PORT": str(noauth_port), "AUTH_PORT": str(auth_port), "UPSTREAM": self.upstream_url.split("/")[2],
               "BENCH_USER": USER, "HASH_BASE64": base64.b64encode(hash_.encode()).decode()}
        self.caddy = subprocess.Popen(["caddy", "run", "--config", str(BENCH / "Caddyfile"), "--adapter", "caddyfile"],
                                      env=env, stdout=(home / "log").open("w"), stderr=subprocess.STDOUT)
        self.caddy_cpu = _process_cpu(self.caddy.pid)
        self.caddy_noauth_url = f"http://127.0.0.1:{noauth_port}/"
        self.caddy_auth_url = f"http://127.0.0.1:{auth_port}/"

        for url in (self.upstream_url, self.rumistack_url + "/health", self.plain_url, self.caddy_noauth_url, self.caddy_auth_url):
            _wait_for(url)

    def close(self) -> None:
        if self.caddy is not None:
            self.caddy.terminate()
            self.caddy.wait(timeout=10)
        stack.down(self.config, remove_volumes=True)


@dataclass
class Results:
    rows: list[Row]  # in the table's order
    no_auth: Row
    verdicts: list[str]


def measure(s: Setups, wrk: Wrk, plan: Plan, log: Callable[[str], None]) -> Results:
    good = {"Authorization": basic(USER, PASSWORD)}
    for url in (s.rumistack_url + "/", s.caddy_auth_url):  # each verifies the credential once, then has it cached
        assert _status(url, good["Authorization"]) == 200, url
    bearer = {"Authorization": "Bearer bench-token"}
    assert _status(s.rumistack_url + "/api" + ASSET, bearer["Authorization"]) == 200  # confirmed once, then cached

    def load(url: str, cpu: Callable[[], float], headers: dict[str, str] | None = None,
             connections: int | None = None) -> Callable[[Plan], Run]:
        def measured(plan: Plan) -> Run:
            if connections:
                plan = dataclasses.replace(plan, threads=1, connections=connections)
            before = cpu()
            run = _all_ok(wrk.run(url, plan, headers=headers), url)
            run.cpu_us = (cpu() - before) / run.requests * 1e6
            return run
        return measured

    def plain_auth_basic(plan: Plan) -> Run:
        # bcrypt is the bottleneck: more connections than workers only queue
        # (and with 16, no request would finish within a round)
        run = load(s.plain_url, s.plain_cpu, good, connections=2)(plan)
        # the requests wrk left queued still run bcrypt: a request on a new
        # connection to each worker is answered after them
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: _status(s.plain_url, good["Authorization"]), range(4)))
        return run

    upstream = Row("upstream, direct")
    no_auth = Row("nginx, no auth (the same nginx, an exempt path)")
    plain = Row("nginx auth_basic, bcrypt cost 12", "bcrypt on every request; 2 connections, one per worker")
    cached = Row("rumistack auth (cached), bcrypt cost 12")
    strict = Row("rumistack strict API mode, cached Bearer token", "/api/ with a token the upstream confirmed once")
    flooded = Row("rumistack auth during a wrong-password flood")
    caddy = Row("Caddy, no auth")
    caddy_auth = Row("Caddy basic_auth (cached), bcrypt cost 12")
    loads = [(upstream, load(s.upstream_url, s.upstream_cpu)),
             (no_auth, load(s.rumistack_url + "/manifest.webmanifest", s.nginx_cpu)),
             (cached, load(s.rumistack_url + "/", s.nginx_cpu, good)),
             (strict, load(s.rumistack_url + "/api" + ASSET, s.nginx_cpu, bearer)),
             (caddy, load(s.caddy_noauth_url, s.caddy_cpu)), (caddy_auth, load(s.caddy_auth_url, s.caddy_cpu, good)),
             (plain, plain_auth_basic)]

    # every row once a round, the order reversed every other round, so no
    # auth and cached auth always run next to each other
    auth_ratios, strict_ratios = [], []
    for number in range(plan.rounds):
        log(f"round {number + 1} of {plan.rounds}")
        for row, run in loads if number % 2 == 0 else loads[::-1]:
            row.runs.append(run(plan))
        auth_ratios.append(cached.runs[-1].rate / no_auth.runs[-1].rate)
        strict_ratios.append(strict.runs[-1].rate / no_auth.runs[-1].rate)

    # a sustained flood from another address: after its first seconds (the
    # burst of verifications the limits allow at once) it gets one a 6 s.
    # the cached user is measured alone and during the flood, alternately
    log(f"a flood of wrong passwords: {plan.flood_warmup:g} s for its burst of verifications, then rounds")
    Wrk.result(wrk.start(s.flood_url, plan, plan.flood_warmup, script=_flood_script(), threads=1))
    before = s.nginx_cpu()
    attempts = Wrk.result(wrk.start(s.flood_url, plan, plan.seconds, script=_flood_script(), threads=1)).requests
    refusal_us = (s.nginx_cpu() - before) / max(attempts, 1) * 1e6
    alone, attacks = [], []
    for number in range(plan.rounds):
        log(f"flood round {number + 1} of {plan.rounds}")
        alone.append(load(s.rumistack_url + "/", s.nginx_cpu, good)(plan))
        flood = wrk.start(s.flood_url, plan, plan.seconds + 1, script=_flood_script(), threads=1)
        time.sleep(0.5)
        # while the limits let a verification through, bcrypt holds an nginx worker
        during = _all_ok(wrk.run(s.rumistack_url + "/", plan, headers=good), "the cached user during the flood",
                         may_starve=True)
        flooded.runs.append(during)  # nginx's CPU then is mostly the flood's: not shown
        attacks.append(Wrk.result(flood))
    throttled = _status(s.flood_url, basic(USER, "one more guess"))
    kept = statistics.median(during.rate / before.rate for before, during in zip(alone, flooded.runs))
    flood_rate = statistics.median(attack.requests / attack.seconds for attack in attacks)
    flooded.note = (f"one other address sends {flood_rate:,.0f} wrong passwords a second (all refused, at "
                    f"{refusal_us:.0f} µs of nginx CPU each; the last answer: {throttled}); the cached user keeps "
                    f"{kept:.0%} of its rate alone, measured alternately")

    extra = statistics.median(c.cpu_us - n.cpu_us for c, n in zip(cached.runs, no_auth.runs))
    return Results(
        rows=[upstream, no_auth, plain, cached, strict, flooded, caddy, caddy_auth],
        no_auth=no_auth,
        verdicts=[
            f"authenticated at {statistics.median(auth_ratios):.0%} of no auth through the same nginx, "
            "the median of the rounds (goal: at least 80%)",
            f"strict API mode, cached Bearer tokens at {statistics.median(strict_ratios):.0%} of no auth",
            f"the cached check costs nginx {extra:.1f} µs of CPU a request (median of the rounds' "
            f"differences), on {no_auth.median().cpu_us:.1f} µs without auth",
            f"the cached user keeps {kept:.0%} of its throughput during the flood (goal: at least 50%)",
        ],
    )


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _cpu(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us:.1f} µs" if us < 1000 else f"{us / 1000:,.0f} ms"


def table(results: Results) -> str:
    base = results.no_auth.median().rate
    lines = ["| setup | req/s | p50 | p99 | vs no auth | server CPU a request | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in results.rows:
        run = row.median()
        lines.append(f"| {row.name} | {_rate(run.rate)} | {run.p50_ms:.2f} ms | {run.p99_ms:.2f} ms "
                     f"| {run.rate / base:.0%} | {_cpu(run.cpu_us)} | {row.note} |")
    return "\n".join(lines)


def chart(results: Results, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = [row.name for row in results.rows][::-1]
    rates = [row.median().rate for row in results.rows][::-1]
    base = results.no_auth.median().rate
    colours = ["#c0392b" if name.startswith("rumistack") else "#7f8c8d" for name in names]
    figure, axes = pyplot.subplots(figsize=(10, 4.2))
    bars = axes.barh(names, rates, color=colours)
    axes.set_xscale("log")
    axes.set_xlabel("requests per second (log scale; higher is better)")
    axes.set_title(title, fontsize=10)
    for bar, rate in zip(bars, rates):
        axes.text(bar.get_width() * 1.08, bar.get_y() + bar.get_height() / 2, f"{_rate(rate)}  ({rate / base:.0%})",
                  va="center", fontsize=8)
    axes.set_xlim(right=max(rates) * 8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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

    def log(message: str) -> None:
        print(f"- {message}", file=sys.stderr, flush=True)

    client = docker.from_env()
    pinned = images.ensure_images(client, log=log)  # the images of this checkout's recipes
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="rumibench-") as tmp:
        setups = Setups(client, Path(tmp), args.nginx_image or pinned[images.NGINX],
                        args.upstream_image or pinned[images.STATIC_UPSTREAM], extra_labels)
        try:
            setups.start(log)
            results = measure(setups, Wrk(Path(tmp)), plan, log)
        finally:
            setups.close()
        # the browser rows after the others: Chromium would load the machine under their rounds
        flows = BrowserFlows(client, Path(tmp), {
            "nginx": args.nginx_image or pinned[images.NGINX], "rumitalk": pinned[images.STUB],
            "mongodb": pinned[images.MONGO], "ai": pinned[images.AI],
            "python": pinned[images.PYTHON]}, _free_port, setups.labels, plan.rounds)
        try:
            flows.start(log)
            browser_rows = flows.measure(log)
        finally:
            flows.close()

    caddy_version = subprocess.run(["caddy", "version"], capture_output=True, text=True).stdout.split()[0]
    how = (f"{'smoke run, measures nothing: ' if plan.smoke else ''}{os.cpu_count()} cores; nginx {setups.nginx_version}, "
           f"Caddy {caddy_version}; wrk {plan.threads} threads, {plan.connections} connections, "
           f"median of {plan.rounds} round(s) of {plan.seconds:g} s a row; load average {load_before} before")
    verdicts = [*results.verdicts, browserflow.verdict(browser_rows)]
    text = "\n".join([table(results), "", browserflow.table(browser_rows), "", how, "",
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
        log(f"updated the table in {DOCS_PAGE} and bench/latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

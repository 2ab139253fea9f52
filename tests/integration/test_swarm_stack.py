"""The swarm stack on a real swarm of three engines (swarmnodes.py): the
commands of docs/swarm.md ("run it") run as written against the manager,
then through each node that takes traffic, over HTTPS with the self-signed
certificate `render --swarm` made: the auth matrix, the boundary matrix and
`rumistack check` (the same test functions as for the other stacks, with
`proxy` one nginx node of the swarm), a streamed reply, and RumiTalk's tasks
spread over the nodes, answering in turn."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from swarmnodes import Node, Swarm
from test_auth_throttle import NGINX_DATE, _failregex
from web import TlsPort, basic, events, login, send

from rumistack.layout import CONF_DIR, EDGE_FILE, SWARM_SUBNET
from rumistack.tls import SELF_SIGNED_CERT

# `check`, the auth and boundary matrices, run here with `proxy` a node of the swarm; `check` first,
# since its new spellings of the right credential are verified again, and the matrices' wrong passwords
# would have used up the verifications a client may ask a node for (the other stacks get a new nginx
# for each test module instead)
from test_check import test_check_passes_rumistacks_config  # noqa: F401
from test_auth_matrix import *  # noqa: F401,F403
from test_boundary import *  # noqa: F401,F403

# on one host a user change applies without a restart; on a swarm it is a new nginx task (docs/swarm.md)
del test_user_changes_apply_to_cached_credentials_at_once_without_restarting_nginx  # noqa: F821

ROOT = Path(__file__).parents[2]
DOCS_PAGE, DOCS_SECTION = ROOT / "docs" / "swarm.md", "run it"
NGINX_NODES = ("node-1", "node-2")  # labelled rumistack.nginx=true by the docs' commands
USER, PASSWORD = "alice", "correct horse battery"
REALM = "RumiTalk"  # the default: the docs' commands run with the defaults but the images


def docs_commands() -> list[str]:
    """The command lines of the code block of docs/swarm.md's "run it" section."""
    page = DOCS_PAGE.read_text()
    section = page.split(f"\n## {DOCS_SECTION}\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```\n(.*?)^```", section, re.S | re.M)
    return [line for line in block.splitlines() if line.strip()]


@dataclass
class Deployment:
    swarm: Swarm
    root: Path
    env: dict[str, str]

    def sh(self, command: str, input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=self.root, env=self.env,
                                input=input, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    @property
    def ca_file(self) -> Path:
        return self.root / ".rumistack" / "tls" / SELF_SIGNED_CERT

    def port(self, node: Node) -> TlsPort:
        return TlsPort(node.local_ports[8443], ssl.create_default_context(cafile=self.ca_file), "localhost")

    def node(self, hostname: str) -> Node:
        return next(n for n in self.swarm.nodes if n.hostname == hostname)

    def converged(self, timeout: float = 240) -> None:
        """Every service has its tasks running (healthy, where it has a health check) and no others."""
        client = self.swarm.client()
        deadline = time.monotonic() + timeout
        while True:
            pending = {}
            nodes = client.nodes.list()
            for service in client.services.list():
                mode = service.attrs["Spec"]["Mode"]
                if "Replicated" in mode:
                    wanted = mode["Replicated"]["Replicas"]
                else:
                    constraints = service.attrs["Spec"]["TaskTemplate"].get("Placement", {}).get("Constraints", [])
                    wanted = sum(1 for n in nodes if all(_meets(n, c) for c in constraints)
                                 and n.attrs["Spec"]["Availability"] == "active"
                                 and n.attrs["Status"]["State"] == "ready")
                tasks = service.tasks(filters={"desired-state": "running"})
                running = [t for t in tasks if t["Status"]["State"] == "running"]
                if len(running) != wanted or len(tasks) != wanted:
                    pending[service.name] = f"{len(running)}/{wanted} running, {len(tasks)} wanted running"
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack did not converge: {pending}")
            time.sleep(1)


def _meets(node, constraint: str) -> bool:
    match = re.fullmatch(r"node\.labels\.(\S+) == (\S+)", constraint)
    assert match, constraint
    return node.attrs["Spec"].get("Labels", {}).get(match[1]) == match[2]


def _environment(swarm: Swarm, test_images: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUMISTACK_", "RUMITALK_", "COMPOSE_"))}
    env.update({"DOCKER_HOST": swarm.manager.engine,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"})  # this rumistack
    return env


@pytest.fixture(scope="module")
def deployment(swarm: Swarm, test_images, tmp_path_factory) -> Deployment:
    root = tmp_path_factory.mktemp("swarm-project")
    # the images are the local ones, loaded into every node; everything else is the default
    (root / ".env").write_text(
        f"RUMISTACK_NGINX_IMAGE={test_images['nginx']}\nRUMITALK_IMAGE={test_images['rumitalk']}\n"
        f"RUMISTACK_MONGO_IMAGE={test_images['mongodb']}\nRUMISTACK_REDIS_IMAGE={test_images['redis']}\n"
        f"RUMISTACK_TOOLS_BASE_IMAGE={test_images['python']}\n")
    deployment = Deployment(swarm, root, _environment(swarm, test_images))
    for command in docs_commands():
        typed = f"{PASSWORD}\n{PASSWORD}\n" if command.startswith("rumistack adduser") else None
        deployment.sh(command.replace("adduser alice", f"adduser {USER}"), input=typed)
    deployment.converged()
    return deployment


@dataclass
class SwarmProxy:
    """One nginx node of the swarm stack, as the matrix tests see a proxy."""

    deployment: Deployment
    node: Node
    user: str = USER
    password: str = PASSWORD
    realm: str = REALM

    @property
    def port(self) -> TlsPort:
        return self.deployment.port(self.node)

    @property
    def ca_file(self) -> Path:
        return self.deployment.ca_file

    @property
    def url(self) -> str:
        return f"https://localhost:{int(self.port)}"

    @property
    def scheme(self) -> str:
        return "https"

    @property
    def tls(self) -> ssl.SSLContext:
        return self.port.context


def _renew_nginx(deployment: Deployment, timeout: float = 300) -> None:
    """New nginx tasks (`docker service update --force`), each with new limits, and the old ones gone."""
    client = deployment.swarm.client()
    (nginx,) = [s for s in client.services.list() if s.name.endswith("_nginx")]
    old = {t["ID"] for t in nginx.tasks()}
    nginx.force_update()
    deadline = time.monotonic() + timeout
    while True:
        running = [t for t in nginx.tasks(filters={"desired-state": "running"})]
        if len(running) == len(NGINX_NODES) and all(t["ID"] not in old and t["Status"]["State"] == "running"
                                                    for t in running):
            break
        assert time.monotonic() < deadline, "nginx's tasks were not replaced"
        time.sleep(1)
    deployment.converged()


@pytest.fixture(scope="module", params=NGINX_NODES)
def proxy(request, deployment) -> SwarmProxy:
    """The matrices against each node that takes traffic, through its own published port. A node's edge
    passes connections to every node's nginx, and each nginx counts this host's wrong passwords (one
    client address) on its own: so before the second node, new nginx tasks with new limits, as the other
    stacks get a new nginx for each test module."""
    if request.param != NGINX_NODES[0]:
        _renew_nginx(deployment)
    proxy = SwarmProxy(deployment, deployment.node(request.param))
    deadline = time.monotonic() + 60
    while send(proxy.port, "/", headers={"Authorization": basic(USER, PASSWORD)}).status != 200:
        assert time.monotonic() < deadline, "the node's nginx never let the user in"
        time.sleep(1)
    return proxy


def test_the_stack_runs_where_the_labels_put_it(deployment):
    client = deployment.swarm.client()
    placed: dict[str, set[str]] = {}
    hostnames = {n.id: n.attrs["Description"]["Hostname"] for n in client.nodes.list()}
    for service in client.services.list():
        for task in service.tasks(filters={"desired-state": "running"}):
            placed.setdefault(service.name.split("_", 1)[1], set()).add(hostnames[task["NodeID"]])
    assert placed["nginx"] == placed["edge"] == set(NGINX_NODES)  # the edge holds the ports, nginx behind it
    assert placed["mongodb"] == {"node-1"}
    assert len(placed["rumitalk"]) == 2  # two replicas, spread over two nodes
    assert placed["verifier"] == set(NGINX_NODES)  # beside every nginx: they share its sockets' volume
    assert set(placed) == {"edge", "nginx", "verifier", "rumitalk", "redis", "mongodb"}


def test_a_reply_streams_through_every_node(deployment):
    for hostname in NGINX_NODES:
        port = deployment.port(deployment.node(hostname))
        token = login(port)
        received = events(port, "/api/stream?events=4&gap=0.3", token)
        assert [e["n"] for e, _ in received] == [0, 1, 2, 3]
        for (event, arrived), (following, _) in zip(received, received[1:]):
            assert arrived < following["sent"], event


def test_rumitalks_replicas_share_their_state_in_redis_and_answer_in_turn(deployment):
    ports = [deployment.port(deployment.node(hostname)) for hostname in NGINX_NODES]
    token = login(ports[0])  # signed with the stack's JWT_SECRET: every replica takes it
    answers = [send(ports[i % 2], "/api/counter", "POST", {"Authorization": f"Bearer {token}"}) for i in range(30)]
    assert [a.status for a in answers] == [200] * 30
    counted = [json.loads(a.body) for a in answers]
    assert all(c["shared"] for c in counted)
    first = counted[0]["value"]
    # one counter, whichever replica counted: in each replica's own memory the numbers would repeat
    assert [c["value"] for c in counted] == list(range(first, first + 30))
    assert len({a.headers["X-Stub-Replica"] for a in answers}) == 2


class Load:
    """A bounded load loop: each nginx node's port asked for / with the user's credential (or `credential`),
    one request after the other, `pause` seconds apart, from a thread of its own, until stopped (or at most
    `limit` requests a node or `seconds` in all, or with `until_refused` the node's first answer other than
    200). The bounds are above what two rollouts take (a request and its pause: about 50 ms here)."""

    def __init__(self, deployment: Deployment, limit: int = 12000, seconds: float = 600,
                 credential: tuple[str, str] = (USER, PASSWORD), pause: float = 0.02, until_refused: bool = False) -> None:
        self.deployment, self.limit, self.credential = deployment, limit, credential
        self.deadline = time.monotonic() + seconds
        self.pause, self.until_refused = pause, until_refused
        self.stopped = threading.Event()
        self.results: dict[str, list[tuple[float, object]]] = {h: [] for h in NGINX_NODES}
        self.threads = [threading.Thread(target=self._run, args=(h,), daemon=True) for h in NGINX_NODES]

    def _run(self, hostname: str) -> None:
        port = self.deployment.port(self.deployment.node(hostname))
        credential = {"Authorization": basic(*self.credential)}
        for _ in range(self.limit):
            if self.stopped.is_set() or time.monotonic() > self.deadline:
                return
            try:
                outcome: object = send(port, "/", headers=credential).status
            except Exception as exc:  # a refused or reset connection is a failed request
                outcome = f"{type(exc).__name__}: {exc}"
            self.results[hostname].append((time.monotonic(), outcome))
            if self.until_refused and outcome != 200:
                return
            time.sleep(self.pause)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def failures(self) -> dict[str, list]:
        return {h: [o for _, o in r if o != 200] for h, r in self.results.items()}


def _cli(deployment: Deployment, *args: str, input: str | None = None) -> str:
    done = subprocess.run(["rumistack", *args], cwd=deployment.root, env=deployment.env, input=input,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"rumistack {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_user_changes_roll_out_to_every_node_one_after_the_other_and_a_removed_user_is_refused_at_each(deployment):
    ports = [deployment.port(deployment.node(h)) for h in NGINX_NODES]
    carol = {"Authorization": basic("carol", "carols long password")}
    with Load(deployment) as load:
        out = _cli(deployment, "adduser", "carol", "--password-stdin", input="carols long password\n")
        assert "rolled out to the swarm" in out
        # once adduser has returned, every node lets her in, whichever nginx task its edge picks
        assert [send(port, "/", headers=carol).status for port in ports for _ in range(2)] == [200] * 4
        # carol keeps asking while she is removed: a new nginx task that checked her against a verifier
        # with the old users would cache her credential, and let her in after deluser has returned
        with Load(deployment, credential=("carol", "carols long password"), pause=0.5, until_refused=True) as carols:
            _cli(deployment, "deluser", "carol")
        removed = time.monotonic()
        assert all(r and r[-1][1] == 401 for r in carols.results.values()), carols.results
        # once deluser has returned, every node refuses her (a few tries each: her refusals count against
        # her name's limit, so the later ones may be 429)
        assert [send(port, "/", headers=carol).status for port in ports] == [401, 401]
        assert 200 not in [send(port, "/", headers=carol).status for port in ports for _ in range(3)]
    # the edge holds each node's port and is not restarted; nginx's tasks behind it are replaced
    # start-first, so no request fails at any node while they roll, for either change
    _no_failure(load)
    assert all(load.results[h][-1][0] > removed for h in NGINX_NODES)  # the loop ran through both rollouts


def _no_failure(load: Load) -> None:
    counts = {h: len(r) for h, r in load.results.items()}
    assert all(n > 20 for n in counts.values()), counts
    assert load.failures() == {h: [] for h in NGINX_NODES}, (counts, {h: f[:5] for h, f in load.failures().items()})


def _edge_tasks(deployment: Deployment) -> set[str]:
    (edge,) = [s for s in deployment.swarm.client().services.list() if s.name.endswith("_edge")]
    return {t["ID"] for t in edge.tasks()}


def test_the_edge_probes_its_connections_to_nginx_so_a_dead_nodes_end_within_a_minute(deployment):
    """The kernel settings of each edge task's own network namespace, as its kernel reads them, and the
    keepalive nginx asks for on the connections it opens (proxy_socket_keepalive)."""
    for hostname in NGINX_NODES:
        client = deployment.swarm.client(deployment.node(hostname))
        (edge,) = client.containers.list(filters={"label": "com.docker.swarm.service.name=rumistack_edge"})
        probes = edge.exec_run(["cat", "/proc/sys/net/ipv4/tcp_keepalive_time", "/proc/sys/net/ipv4/tcp_keepalive_intvl",
                                "/proc/sys/net/ipv4/tcp_keepalive_probes"])
        assert (probes.exit_code, probes.output.split()) == (0, [b"30", b"10", b"3"]), (hostname, probes)
        shown = edge.exec_run(["nginx", "-T", "-c", f"{CONF_DIR}/{EDGE_FILE}"])
        assert shown.exit_code == 0 and b"proxy_socket_keepalive on;" in shown.output


def test_a_config_change_rolls_out_with_no_failed_request_and_every_node_has_it(deployment):
    """A new realm in .env and `rumistack reload` under the load loop: nginx's tasks roll, the edge's stay."""
    ports = [deployment.port(deployment.node(h)) for h in NGINX_NODES]
    env_file = deployment.root / ".env"
    original = env_file.read_text()
    edges = _edge_tasks(deployment)
    try:
        env_file.write_text(original + "RUMISTACK_REALM=Elsewhere Entirely\n")
        with Load(deployment) as load:
            assert "rolled out to the swarm" in _cli(deployment, "reload")
        _no_failure(load)
        for port in ports:
            assert send(port, "/").headers["WWW-Authenticate"] == 'Basic realm="Elsewhere Entirely"'
        assert _edge_tasks(deployment) == edges  # the same tasks: never restarted
    finally:
        env_file.write_text(original)
        _cli(deployment, "reload")
    assert [send(port, "/").headers["WWW-Authenticate"] for port in ports] == [f'Basic realm="{REALM}"'] * 2


def test_a_failed_login_is_logged_with_the_clients_address_not_the_edges(deployment):
    """The fail2ban line (docs/operations.md) names the address a node's port sees the client at: from this
    host, through the node container's published port, the gateway of the test's network. The edge passes
    it on in the PROXY protocol header; its own address (on the stack's overlay) is never named."""
    gateway = docker.from_env().networks.get(deployment.swarm.network).attrs["IPAM"]["Config"][0]["Gateway"]
    name = f"mallory-{os.getpid()}"
    for hostname in NGINX_NODES:
        port = deployment.port(deployment.node(hostname))
        assert send(port, "/", headers={"Authorization": basic(name, "whatever")}).status == 401
    failregex = _failregex()
    hosts = []
    for hostname in NGINX_NODES:  # the edge of a node passes a connection to any node's nginx
        client = deployment.swarm.client(deployment.node(hostname))
        for container in client.containers.list(filters={"label": "com.docker.swarm.service.name=rumistack_verifier"}):
            for line in container.logs().decode().splitlines():
                if name in line and (match := failregex.match(NGINX_DATE.sub("", line))):
                    hosts.append(match["host"])
    assert hosts == [gateway, gateway]
    assert ipaddress.ip_address(gateway) not in ipaddress.ip_network(SWARM_SUBNET)


def test_status_shows_each_services_tasks_their_nodes_and_health(deployment):
    deployment.converged()
    shown = json.loads(_cli(deployment, "status", "--json"))
    assert shown["replicas"] == {"edge": "2/2 (global)", "mongodb": "1/1", "nginx": "2/2 (global)", "redis": "1/1",
                                 "rumitalk": "2/2", "verifier": "2/2 (global)"}
    nodes = {}
    for task in shown["tasks"]:
        assert (task["state"], task["health"]) == ("running", "healthy"), task
        nodes.setdefault(task["service"], set()).add(task["node"])
    assert nodes["edge"] == nodes["nginx"] == nodes["verifier"] == set(NGINX_NODES)
    assert nodes["mongodb"] == {"node-1"} and len(nodes["rumitalk"]) == 2
    text = _cli(deployment, "status")
    assert "rumitalk     2/2" in text and "  node-1" in text


def _rumitalk_nodes(deployment: Deployment) -> list[str]:
    client = deployment.swarm.client()
    hostnames = {n.id: n.attrs["Description"]["Hostname"] for n in client.nodes.list()}
    (service,) = [s for s in client.services.list() if s.name.endswith("_rumitalk")]
    return sorted(hostnames[t["NodeID"]] for t in service.tasks(filters={"desired-state": "running"}))


def test_rumitalk_tasks_move_away_from_a_drained_node_and_a_stopped_one_without_a_failed_request(deployment):
    """RumiTalk's tasks move (a drained node, then a worker stopped outright) under the load loop: nginx
    follows them by DNS and retries on another task, so no request fails at the nodes that keep running."""
    client = deployment.swarm.client()
    nodes = {n.attrs["Description"]["Hostname"]: n for n in client.nodes.list()}
    deployment.converged()
    with Load(deployment) as load:
        # a worker that runs a RumiTalk task is drained: its task starts elsewhere
        drained = next(h for h in _rumitalk_nodes(deployment) if h != "node-1")
        nodes[drained].update({**nodes[drained].attrs["Spec"], "Availability": "drain"})
        deployment.converged()
        assert drained not in _rumitalk_nodes(deployment)
        nodes[drained].reload()
        nodes[drained].update({**nodes[drained].attrs["Spec"], "Availability": "active"})
        # node-2 stopped outright (nginx and maybe a RumiTalk task on it): node-1 keeps answering
        deployment.node("node-2").container.kill()
        deadline = time.monotonic() + 120
        while "node-2" in _rumitalk_nodes(deployment) or len(_rumitalk_nodes(deployment)) < 2:
            assert time.monotonic() < deadline, "RumiTalk's tasks did not leave the stopped node"
            time.sleep(1)
        time.sleep(6)  # longer than nginx's DNS answers live: requests after the move
    failures = load.failures()
    assert len(load.results["node-1"]) > 50 and failures["node-1"] == [], failures["node-1"][:5]
    # node-2 back: it rejoins the swarm with its engine's state, and the stack converges again
    deployment.node("node-2").start_again(deployment.swarm.network)
    deployment.converged(timeout=300)

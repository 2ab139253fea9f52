"""The benchmark's real-browser rows: the time from navigation to a
streamed reply on screen, in Debian's Chromium (driven by playwright, as
the browser tests drive it), through rumistack's nginx with Basic Auth
against the same flow through an nginx of the same image without auth.

The stack is rumistack's own (`stack.up`) with the RumiTalk and MongoDB
stand-ins and the stand-in AI provider, its tokens 10 ms apart, so the
flow's time is the page, the login, the stream and the auth, not a model
thinking. A first visit is a user nginx has not verified yet (one bcrypt);
a second visit is the same user again in a new browser (nginx's cache).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from rumistack import stack
from rumistack.config import load_config
from rumistack.spec import container_name, network_name
from rumistack.users import UserFile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import browser  # noqa: E402  (Chromium in a network namespace of its own, reaching loopback only)

PASSWORD = "correct horse battery staple"
EMAIL, APP_PASSWORD = "user@rumi.test", "stub-password"  # the RumiTalk stand-in's account
NO_AUTH_CONF = """
events {}
http {
    server {
        listen 80;
        location / {
            proxy_pass http://rumitalk:3080;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
        }
    }
}
"""


@dataclass
class Flow:
    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class BrowserFlows:
    """The stack, the provider, the no-auth nginx and Chromium; `close` removes them."""

    def __init__(self, client: docker.DockerClient, workdir: Path, images: dict[str, str], free_port: Callable[[], int],
                 labels: dict[str, str], visits: int) -> None:
        self.client, self.workdir, self.images, self.labels, self.visits = client, workdir, images, labels, visits
        settings = workdir / "rumitalk.env"
        settings.write_text("OPENAI_API_KEY=sk-bench-stand-in\nOPENAI_REVERSE_PROXY=http://ai:8000/v1\n")
        self.config = load_config("/nonexistent", environ={
            "RUMISTACK_PROJECT": f"{labels['rumistack.project']}-browser",
            "RUMISTACK_NGINX_IMAGE": images["nginx"], "RUMITALK_IMAGE": images["rumitalk"],
            "RUMISTACK_MONGO_IMAGE": images["mongodb"], "RUMISTACK_TOOLS_BASE_IMAGE": images["python"],
            "RUMISTACK_HTTP_PORT": str(free_port()),
            "RUMISTACK_BIND_ADDRESS": "127.0.0.1", "RUMISTACK_TLS": "off",
            "RUMISTACK_STATE_DIR": str(workdir / "browser-state"), "RUMITALK_ENV_FILE": str(settings)})
        self.users = UserFile(self.config.users_file)
        self.containers: list = []
        self._driver = self._chromium = None

    def start(self, log: Callable[[str], None]) -> None:
        # one user per first visit, and one for the second visits
        for n in range(self.visits + 1):
            self.users.add(f"visitor{n}", PASSWORD)
        log("starting rumistack's stack with the RumiTalk stand-in and the stand-in AI provider")
        stack.up(self.config, self.users)
        network = network_name(self.config)
        self.containers.append(self.client.containers.run(
            self.images["ai"], detach=True, labels=self.labels, environment={"AI_STUB_GAP": "0.01"}, network=network,
            networking_config={network: self.client.api.create_endpoint_config(aliases=["ai"])}))
        conf = self.workdir / "no-auth.conf"
        conf.write_text(NO_AUTH_CONF)
        plain = self.client.containers.run(
            self.config.nginx_image, ["nginx", "-c", "/no-auth.conf", "-g", "daemon off;"], detach=True,
            labels=self.labels, network=network, ports={"80/tcp": ("127.0.0.1", None)},
            volumes={str(conf): {"bind": "/no-auth.conf", "mode": "ro"}})
        self.containers.append(plain)
        for _ in range(100):
            plain.reload()
            if plain.attrs["NetworkSettings"]["Ports"].get("80/tcp"):
                break
            time.sleep(0.1)
        self.no_auth_url = f"http://127.0.0.1:{plain.attrs['NetworkSettings']['Ports']['80/tcp'][0]['HostPort']}/"
        self.auth_url = self.config.url
        from playwright.sync_api import sync_playwright

        log("starting Chromium")
        self._driver = sync_playwright().start()
        home = self.workdir / "browser-home"
        home.mkdir()
        self._chromium = browser.launch(self._driver, home)
        self.nginx_version = self.client.containers.get(container_name(self.config, "nginx")).exec_run(
            ["nginx", "-v"]).output.decode().strip().split("/")[-1]

    def visit(self, url: str, user: str | None) -> float:
        """Seconds from navigation to the whole streamed reply on screen, in a new browser context."""
        context = self._chromium.new_context(
            http_credentials={"username": user, "password": PASSWORD} if user else None)
        try:
            page = context.new_page()
            states = "(s) => s.includes(document.body.dataset.status)"
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_function(states, arg=["logged out", "ready", "error"])
            page.fill("#email", EMAIL)
            page.fill("#password", APP_PASSWORD)
            page.click("#login")
            page.wait_for_function(states, arg=["ready", "login failed", "error"])
            page.fill("#message", "how long does this take?")
            page.click("#send")
            page.wait_for_function(states, arg=["reply complete", "error"])
            elapsed = time.perf_counter() - started
            status = page.text_content("#status")
            if status != "reply complete":
                raise RuntimeError(f"the browser flow at {url} ended with {status!r}")
            return elapsed
        finally:
            context.close()

    def measure(self, log: Callable[[str], None]) -> list[Flow]:
        no_auth, first, second = (Flow("no auth (nginx of the same image)"),
                                  Flow("rumistack, first visit (one bcrypt verification)"),
                                  Flow("rumistack, second visit (cached)"))
        self.visit(self.no_auth_url, None)  # the app's assets and the provider warm, before any row
        self.visit(self.auth_url, f"visitor{self.visits}")  # the second visits' user, verified once
        for n in range(self.visits):
            log(f"browser round {n + 1} of {self.visits}")
            no_auth.seconds.append(self.visit(self.no_auth_url, None))
            first.seconds.append(self.visit(self.auth_url, f"visitor{n}"))
            second.seconds.append(self.visit(self.auth_url, f"visitor{self.visits}"))
        return [no_auth, first, second]

    def close(self) -> None:
        if self._chromium is not None:
            self._chromium.close()
        if self._driver is not None:
            self._driver.stop()
        for container in self.containers:
            container.remove(force=True)
        stack.down(self.config, remove_volumes=True)


def table(flows: list[Flow]) -> str:
    base = flows[0].median
    lines = ["| a real browser: navigation to a streamed reply on screen | median | vs no auth |", "|---|---:|---:|"]
    lines += [f"| {flow.name} | {flow.median * 1000:,.0f} ms | {flow.median / base:.2f}x |" for flow in flows]
    return "\n".join(lines)


def verdict(flows: list[Flow]) -> str:
    no_auth, first, second = (flow.median for flow in flows)
    return (f"a real browser reaches a streamed reply in {second / no_auth:.2f}x the time without auth on a second "
            f"visit and {first / no_auth:.2f}x on a first (one bcrypt verification): {second * 1000:,.0f} and "
            f"{first * 1000:,.0f} ms against {no_auth * 1000:,.0f} ms")

"""Test helpers over rumistack.probe: answers with the stand-in's record of
what reached it decoded."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import Message

from rumistack.probe import request


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes
    seen: dict | None  # what the RumiTalk stand-in received, None if the request never reached it

    def seen_header(self, name: str) -> str | None:
        for key, value in (self.seen or {}).get("headers", []):
            if key.lower() == name.lower():
                return value
        return None


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TlsPort(int):
    """A port on 127.0.0.1 that speaks HTTPS, with the context that trusts its certificate. It is an int,
    so every test that sends to `proxy.port` runs unchanged over HTTPS."""

    context: ssl.SSLContext
    server_name: str | None

    def __new__(cls, port: int, context: ssl.SSLContext, server_name: str | None = None) -> TlsPort:
        self = super().__new__(cls, port)
        self.context, self.server_name = context, server_name
        return self


def base_url(port: int) -> str:
    return f"{'https' if isinstance(port, TlsPort) else 'http'}://127.0.0.1:{port}"


def connect(port: int) -> socket.socket:
    """A connection to 127.0.0.1:`port`, over TLS (HTTP/1.1) to a TlsPort."""
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    if isinstance(port, TlsPort):
        return port.context.wrap_socket(sock, server_hostname=port.server_name or "127.0.0.1")
    return sock


def send(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
         body: bytes = b"") -> Answer:
    """One request to 127.0.0.1:`port` with `path` sent verbatim (over HTTPS to a TlsPort)."""
    response = request(base_url(port), path, method, headers, body, tls=getattr(port, "context", None),
                       server_name=getattr(port, "server_name", None))
    record = response.headers.get("X-Stub-Request")
    seen = json.loads(base64.b64decode(record)) if record else None
    return Answer(response.status, response.headers, response.body, seen)


def login(port: int, email: str = "user@rumi.test", password: str = "stub-password") -> str:
    """Log in to RumiTalk (the stand-in) through the proxy; return the Bearer token."""
    answer = send(port, "/api/auth/login", "POST", {"Content-Type": "application/json"},
                  json.dumps({"email": email, "password": password}).encode())
    assert answer.status == 200, answer.body
    return json.loads(answer.body)["token"]


def events(port: int, target: str, token: str) -> list[tuple[dict, float]]:
    """Read a server-sent-event stream (over HTTPS from a TlsPort); return each event's data with the time
    it arrived."""
    if isinstance(port, TlsPort):
        # the name the certificate is for, when the port has one (it leads to loopback, as 127.0.0.1 does)
        connection = http.client.HTTPSConnection(port.server_name or "127.0.0.1", int(port), timeout=60,
                                                 context=port.context)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    connection.request("GET", target, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    assert response.status == 200, (response.status, response.read()[:300])
    found = []
    while line := response.readline():
        if line.startswith(b"data: "):
            found.append((json.loads(line[6:]), time.time()))
    connection.close()
    return found


def chat(port: int, token: str, text: str, endpoint: str = "openAI") -> list[tuple[dict, float]]:
    """Send a chat message as RumiTalk's client does (start a generation, then read its stream); return the
    stream's events with their arrival times."""
    started = send(port, f"/api/agents/chat/{endpoint}?resumable=true", "POST",
                   {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                   json.dumps({"text": text}).encode())
    assert started.status == 200, (started.status, started.body[:300])
    return events(port, f"/api/agents/chat/stream/{json.loads(started.body)['streamId']}", token)

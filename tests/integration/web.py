"""A small HTTP client for tests: sends the request path exactly as given
(no normalisation) and decodes the stand-in's record of what reached it."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seen: dict | None  # what the RumiTalk stand-in received, None if the request never reached it

    def seen_header(self, name: str) -> str | None:
        for key, value in (self.seen or {}).get("headers", []):
            if key.lower() == name.lower():
                return value
        return None


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def send(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
         body: bytes | None = None, host: str = "127.0.0.1") -> Answer:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        headers = headers or {}
        connection.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        record = response.headers.get("X-Stub-Request")
        seen = json.loads(base64.b64decode(record)) if record else None
        return Answer(response.status, response.headers, data, seen)
    finally:
        connection.close()


def login(port: int, email: str = "user@rumi.test", password: str = "stub-password") -> str:
    """Log in to RumiTalk (the stand-in) through the proxy; return the Bearer token."""
    answer = send(port, "/api/auth/login", "POST", {"Content-Type": "application/json"},
                  json.dumps({"email": email, "password": password}).encode())
    assert answer.status == 200, answer.body
    return json.loads(answer.body)["token"]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

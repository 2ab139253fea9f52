"""A stand-in for RumiTalk with its HTTP surface, for tests only.

RumiTalk is one Node server on port 3080: the web app (HTML for `/` and any
unknown path, the SPA fallback), its assets, `/manifest.webmanifest`,
`/health`, and the API under `/api/`. Its auth: `POST /api/auth/login` gives
a Bearer token (expiring after `ttl` seconds, 900 unless the login asks for
less) and sets an HttpOnly refresh cookie; `POST /api/auth/refresh` trades
the cookie for a new token; `POST /api/auth/logout` revokes both;
`GET /api/user` is the current user, for a valid token only. A few routes
answer without a token, as RumiTalk's do (`/api/auth/register`,
`/api/auth/requestPasswordReset`, `/api/config`, `/api/banner`,
`/api/share/...`); every other `/api/` route needs the token. Routes match
case-insensitively, as Express does.

Like RumiTalk, its /health fails until the MongoDB in MONGO_URI (when set)
accepts connections. It also streams server-sent events (/api/stream),
takes uploads (POST /api/files), serves a gzip-compressed answer
(/api/compressed) and echoes over a WebSocket upgrade (/ws).

Every answer carries the request as received (method, raw path, headers) in
the `X-Stub-Request` header (base64 of JSON), and each request is logged to
stdout as one JSON line, so tests can see exactly what a proxy forwarded.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

EMAIL = os.environ.get("STUB_EMAIL", "user@rumi.test")
PASSWORD = os.environ.get("STUB_PASSWORD", "stub-password")

INDEX = b"<!doctype html><html><head><title>RumiTalk</title></head><body><div id=root></div><script src=/assets/index.js></script></body></html>"
ASSETS = {"/assets/index.js": b"console.log('rumitalk');\n"}
MANIFEST = json.dumps({"name": "RumiTalk", "short_name": "RumiTalk", "start_url": "/"}).encode()

PUBLIC = ("/api/auth/register", "/api/auth/requestpasswordreset", "/api/config", "/api/banner")

_tokens: dict[str, float] = {}  # token -> when it expires
_refresh: set[str] = set()
_lock = threading.Lock()
_database_seen = False
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _database_reachable() -> bool:
    """RumiTalk cannot work without its MongoDB: reachable once, it counts as up."""
    global _database_seen
    uri = os.environ.get("MONGO_URI")
    if not uri or _database_seen:
        return True
    host_port = urlsplit(uri).netloc.rsplit("@", 1)[-1].split(",")[0]
    host, _, port = host_port.partition(":")
    try:
        socket.create_connection((host, int(port or 27017)), timeout=1).close()
    except OSError:
        return False
    _database_seen = True
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rumitalk-stub"

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def log_message(self, format: str, *args: object) -> None:
        pass  # replaced by the JSON line in _record

    def _record(self) -> str:
        seen = {"method": self.command, "path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
        line = json.dumps(seen)
        print(line, flush=True)
        return base64.b64encode(line.encode()).decode()

    def _route(self) -> None:
        record = self._record()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        path = url.path.lower()
        if path == "/health":
            if not _database_reachable():
                return self._send(503, "text/plain", b"database unreachable", record)
            return self._send(200, "text/plain", b"OK", record)
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket(record)
        if path == "/manifest.webmanifest":
            return self._send(200, "application/manifest+json", MANIFEST, record)
        if path.startswith("/assets/"):
            asset = ASSETS.get(path)
            if asset is None:
                return self._send(404, "text/plain", b"Not Found", record)
            return self._send(200, "application/javascript", asset, record)
        if path == "/api" or path.startswith("/api/"):
            return self._api(path, url.query, body, record)
        return self._send(200, "text/html; charset=utf-8", INDEX, record)

    def _api(self, path: str, query: str, body: bytes, record: str) -> None:
        if path == "/api/auth/login" and self.command == "POST":
            try:
                form = json.loads(body or b"{}")
            except ValueError:
                form = {}
            if form.get("email") == EMAIL and form.get("password") == PASSWORD:
                return self._issue(float(form.get("ttl", 900)), secrets.token_hex(16), record)
            return self._json(401, {"message": "Email or password is incorrect"}, record)
        if path == "/api/auth/refresh" and self.command == "POST":
            cookie = self._cookie("refreshToken")
            with _lock:
                known = cookie in _refresh
            if not known:
                return self._json(401, {"message": "Refresh token expired or not provided"}, record)
            return self._issue(900, cookie, record)
        if path == "/api/auth/logout" and self.command == "POST":
            with _lock:
                _tokens.pop(self._bearer(), None)
                _refresh.discard(self._cookie("refreshToken"))
            return self._json(200, {"message": "Logout successful"}, record)
        if path in PUBLIC or path.startswith("/api/share/"):
            return self._json(200, {"public": True, "path": self.path}, record)
        with _lock:
            valid = _tokens.get(self._bearer(), 0) > time.time()
        if not valid:
            return self._json(401, {"message": "Unauthorized"}, record)
        if path == "/api/user":
            return self._json(200, {"email": EMAIL}, record)
        if path == "/api/stream":
            return self._stream(parse_qs(query), record)
        if path == "/api/files" and self.command == "POST":
            return self._json(200, {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}, record)
        if path == "/api/compressed":
            return self._compressed(record)
        return self._json(200, {"ok": True, "path": self.path}, record)

    def _bearer(self) -> str:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token if scheme.lower() == "bearer" else ""

    def _cookie(self, name: str) -> str:
        for part in (self.headers.get("Cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return ""

    def _issue(self, ttl: float, refresh: str, record: str) -> None:
        """A new token, and the refresh cookie that can renew it."""
        token = secrets.token_hex(16)
        with _lock:
            _tokens[token] = time.time() + ttl
            _refresh.add(refresh)
        body = json.dumps({"token": token, "user": {"email": EMAIL}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", f"refreshToken={refresh}; HttpOnly; Path=/; SameSite=Strict")
        self.send_header("X-Stub-Request", record)
        self.end_headers()
        self.wfile.write(body)

    def _compressed(self, record: str) -> None:
        """An answer RumiTalk compressed itself (as its compression middleware does)."""
        data = json.dumps({"items": list(range(2000))}).encode()
        if "gzip" not in self.headers.get("Accept-Encoding", ""):
            return self._send(200, "application/json", data, record)
        packed = gzip.compress(data, mtime=0)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(packed)))
        self.send_header("X-Stub-Request", record)
        self.end_headers()
        self.wfile.write(packed)

    def _websocket(self, record: str) -> None:
        """Complete the WebSocket handshake, then echo every byte until the peer closes."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("X-Stub-Request", record)
        self.end_headers()
        self.wfile.flush()
        while data := self.connection.recv(65536):
            self.connection.sendall(data)
        self.close_connection = True

    def _stream(self, params: dict[str, list[str]], record: str) -> None:
        """Server-sent events: `events` of them, `gap` seconds apart."""
        count = int(params.get("events", ["3"])[0])
        gap = float(params.get("gap", ["0.5"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Stub-Request", record)
        if params.get("accel") == ["no"]:
            self.send_header("X-Accel-Buffering", "no")
        self.send_header("Connection", "close")
        self.end_headers()
        for n in range(count):
            if n:
                time.sleep(gap)
            self.wfile.write(f"data: {json.dumps({'n': n, 'sent': time.time()})}\n\n".encode())
            self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, payload: dict, record: str) -> None:
        self._send(status, "application/json", json.dumps(payload).encode(), record)

    def _send(self, status: int, content_type: str, body: bytes, record: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Stub-Request", record)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("PORT", "3080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    print(f"rumitalk-stub listening on {port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

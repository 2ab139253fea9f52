"""A stand-in AI provider with OpenAI's HTTP surface, for tests only.

- `POST /v1/chat/completions`: the reply is `Stand-in reply to: <the last
  user message>`, deterministic, so a test can tell it came from here.
  With `"stream": true` it answers server-sent events, one
  `chat.completion.chunk` per word, AI_STUB_GAP seconds apart (default
  0.3), each carrying `sent` (the Unix time it was written), then
  `data: [DONE]`; without, one `chat.completion`.
- `GET /v1/models`: the models it offers (AI_STUB_MODELS, comma-separated).
- `GET /health`: 200 OK.
- `GET /_requests`: what it was asked, for tests: one record per request
  to /v1/ (method, path, the Bearer key, the model), also printed to
  stdout as one JSON line each.

With AI_STUB_KEY set, a /v1/ request without that Bearer key gets an
OpenAI-style 401 error.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GAP = float(os.environ.get("AI_STUB_GAP", "0.3"))
KEY = os.environ.get("AI_STUB_KEY", "")
MODELS = [m.strip() for m in os.environ.get("AI_STUB_MODELS", "gpt-4o-mini,stub-model").split(",") if m.strip()]
PREFIX = "Stand-in reply to:"

_records: list[dict] = []
_lock = threading.Lock()


def reply_tokens(messages: list) -> list[str]:
    """The reply to `messages`, as the tokens it streams: words, each but the first with its leading space."""
    last = next((m.get("content") for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), "")
    if isinstance(last, list):  # content parts, as newer clients send them
        last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
    words = f"{PREFIX} {last}".split()
    return [words[0]] + [" " + w for w in words[1:]]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ai-stub"

    def log_message(self, format: str, *args: object) -> None:
        pass  # replaced by the JSON line in _record

    def do_GET(self) -> None:
        self._route(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._route(self.rfile.read(length) if length else b"")

    def _key(self) -> str | None:
        scheme, _, key = (self.headers.get("Authorization") or "").partition(" ")
        return key if scheme.lower() == "bearer" else None

    def _record(self, model: str | None) -> None:
        record = {"method": self.command, "path": self.path, "key": self._key(), "model": model, "at": time.time()}
        with _lock:  # and one whole line at a time on stdout
            _records.append(record)
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

    def _route(self, body: bytes) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            return self._send(200, "text/plain", b"OK")
        if path == "/_requests":
            with _lock:
                return self._json(200, {"requests": list(_records)})
        if not path.startswith("/v1/"):
            return self._error(404, "not_found", f"Unknown path {path}")
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = None
        self._record(payload.get("model") if isinstance(payload, dict) else None)
        if KEY and self._key() != KEY:
            return self._error(401, "invalid_api_key", "Incorrect API key provided.")
        if path == "/v1/models" and self.command == "GET":
            return self._json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "ai-stub"} for m in MODELS]})
        if path == "/v1/chat/completions" and self.command == "POST":
            if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
                return self._error(400, "invalid_request_error", "messages must be a list")
            tokens = reply_tokens(payload["messages"])
            model = payload.get("model") or MODELS[0]
            if payload.get("stream"):
                return self._stream(tokens, model)
            return self._json(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "".join(tokens)}}],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(tokens), "total_tokens": len(tokens)}})
        return self._error(404, "not_found", f"Unknown route {self.command} {path}")

    def _stream(self, tokens: list[str], model: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        try:
            for n, token in enumerate(tokens):
                if n:
                    time.sleep(GAP)
                chunk = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}],
                         "sent": time.time()}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            done = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "sent": time.time()}
            self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (an aborted reply)
        self.close_connection = True

    def _error(self, status: int, code: str, message: str) -> None:
        kind = "invalid_request_error"
        self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    print(f"ai-stub listening on {port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

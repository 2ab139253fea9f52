"""Meilisearch's HTTP surface as RumiTalk and health checks use it."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MASTER_KEY = os.environ["MEILI_MASTER_KEY"]  # Meilisearch refuses to start in production without one


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            return self._json(200, {"status": "available"})
        if self.headers.get("Authorization") != f"Bearer {MASTER_KEY}":
            return self._json(401, {"code": "missing_authorization_header"})
        return self._json(200, {"results": []})

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("0.0.0.0", 7700), Handler).serve_forever()

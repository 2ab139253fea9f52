"""A stand-in for RumiTalk with its HTTP surface, for tests only.

RumiTalk is one Node server on port 3080: the web app (HTML for `/` and any
unknown path, the SPA fallback, with `Cache-Control: no-cache, no-store,
must-revalidate`), its assets, `/manifest.webmanifest`, `/registerSW.js`,
`/sw.js`, `/health`, and the API under `/api/`. The web app (web/) is a
small single-page app that behaves as RumiTalk's client does.

Its auth, stateless as RumiTalk's: `POST /api/auth/login` answers a Bearer
token, a JWT (HS256) signed with JWT_SECRET, expiring after `ttl` seconds
(SESSION_EXPIRY, in milliseconds as RumiTalk reads it, 15 minutes unless
set, or less if the login asks) and sets the refresh cookie, a JWT signed
with JWT_REFRESH_SECRET (HttpOnly, Secure, SameSite=Strict); so a token
from one replica is valid at every other replica with the same secrets.
`POST /api/auth/refresh` trades the cookie for a new token (without a
cookie: 200 `Refresh token not provided`, as RumiTalk answers);
`POST /api/auth/logout` revokes both (in this process); `GET /api/user` is
the current user, for a valid token only. A few routes answer without a
token, as RumiTalk's do (`/api/auth/register`,
`/api/auth/requestPasswordReset`, `/api/config`, `/api/banner`,
`/api/share/...`); every other `/api/` route needs the token. Routes match
case-insensitively, as Express does.

Its settings, as RumiTalk reads them: the environment (and `/app/.env`,
which does not override it), and the YAML config file at CONFIG_PATH
(default /app/librechat.yaml; a missing file is only logged, a file that
is not valid YAML or not a mapping makes it exit at start).
- `GET /api/endpoints` lists the endpoints it offers: `openAI`,
  `anthropic`, `google`, `azureOpenAI`, `assistants` when OPENAI_API_KEY,
  ANTHROPIC_API_KEY, GOOGLE_KEY, AZURE_API_KEY, ASSISTANTS_API_KEY is set
  and not empty (`userProvide` for the value `user_provided`), and each
  `endpoints.custom[]` entry of the YAML by its name; ENDPOINTS filters
  and orders them. `GET /api/models` names each one's models.
- Chat as RumiTalk's client does it: `POST /api/agents/chat/<endpoint>`
  (JSON `{"text", "model"?}`) starts a reply and answers its `streamId`;
  `GET /api/agents/chat/stream/<streamId>` streams it as server-sent
  events, each provider token relayed as it arrives
  (`data: {"text", "sent", "provider_sent"}`), then
  `data: {"final": true, ...}`; a failure is `event: error`. Each event
  has its number as its `id`: a stream opened again with `Last-Event-ID`
  (RumiTalk's client resumes with `?resume=true`) goes on after it.
  `POST /api/agents/chat/abort` (`{"streamId"}`) stops one. The provider:
  for openAI, OPENAI_API_KEY at OPENAI_REVERSE_PROXY (default OpenAI's
  own URL); for a custom endpoint its `baseURL` and `apiKey` (`${VAR}`
  resolved from the environment). Only OpenAI-compatible providers are
  relayed; the others answer an error event.
- Logs: each request as one JSON line on stdout and in
  `<LIBRECHAT_LOG_DIR or <cwd>/logs>/rumitalk-stub.log`.

Like RumiTalk, its /health fails until the MongoDB in MONGO_URI (when set)
accepts connections. For the proxy tests it also streams server-sent
events (/api/stream), takes uploads (POST /api/files), serves a
gzip-compressed answer (/api/compressed) and echoes over a WebSocket
upgrade (/ws). Like RumiTalk's, `/api/search/enable` answers whether
search is on: SEARCH=true and Meilisearch at MEILI_HOST accepting
MEILI_MASTER_KEY.

Shared state, as RumiTalk keeps it (its streams, rate limits, bans): with
USE_REDIS=true and REDIS_URI, in Redis, which every replica sees; without,
in this process's memory. `POST /api/counter` counts up once a request and
answers `{"value", "shared"}`: the proof that replicas share it.

Every answer carries the request as received (method, raw path, headers) in
the `X-Stub-Request` header (base64 of JSON), and `X-Stub-Replica` (this
container's host name), so tests can see exactly what a proxy forwarded
and to which replica. A request's `X-Stub-Answer-Header: Name: value`
puts that header into the answer, as RumiTalk setting one itself would.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

EMAIL = os.environ.get("STUB_EMAIL", "user@rumi.test")
PASSWORD = os.environ.get("STUB_PASSWORD", "stub-password")
USER_ID = hashlib.sha256(EMAIL.encode()).hexdigest()[:24]  # a MongoDB-like id
REPLICA = socket.gethostname()
WEB = Path(os.environ.get("STUB_WEB_DIR") or Path(__file__).parent / "web")

PUBLIC = ("/api/auth/register", "/api/auth/requestpasswordreset", "/api/config", "/api/banner")
NO_STORE = "no-cache, no-store, must-revalidate"
TYPES = {".html": "text/html; charset=utf-8", ".js": "application/javascript", ".css": "text/css",
         ".png": "image/png", ".webmanifest": "application/manifest+json"}
OPENAI_URL = "https://api.openai.com/v1"
# the built-in endpoints, in RumiTalk's order, each with the variable that turns it on
BUILTIN = (("openAI", "OPENAI_API_KEY"), ("assistants", "ASSISTANTS_API_KEY"), ("azureOpenAI", "AZURE_API_KEY"),
           ("google", "GOOGLE_KEY"), ("anthropic", "ANTHROPIC_API_KEY"))
# fixed development secrets, used only when the environment gives none
DEV_JWT_SECRET = "rumitalk-stub-dev-jwt-secret"
DEV_JWT_REFRESH_SECRET = "rumitalk-stub-dev-jwt-refresh-secret"

_revoked: set[str] = set()  # token ids (jti) and sessions (sid) logged out in this process
_lock = threading.Lock()
_print_lock = threading.Lock()
_database_seen = False
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---- settings ---------------------------------------------------------------------------------------------------

def _log(message: str) -> None:
    """A line about the server itself: stderr (stdout holds the request log) and the log file."""
    print(message, file=sys.stderr, flush=True)
    LOG.write({"message": message})


def load_dotenv(path: Path) -> None:
    """KEY=VALUE lines into the environment, never over a variable already set (as dotenv does)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key.strip(), value)


def load_config(path: str) -> dict:
    """The YAML config file: {} when missing (logged); exits on a file that is not a YAML mapping."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        _log(f"config file {path} not found: using the defaults")
        return {}
    except OSError as exc:
        sys.exit(f"config file {path} cannot be read: {exc}")
    import yaml  # Debian's python3-yaml, in the image

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        sys.exit(f"invalid config file {path}: {exc}")
    if config is None:
        return {}
    if not isinstance(config, dict):
        sys.exit(f"invalid config file {path}: not a mapping but {type(config).__name__}")
    _log(f"config file {path} loaded")
    return config


def _resolve(value: object) -> str:
    """`${VAR}` in a YAML value, from the environment (unset: empty), as RumiTalk does."""
    return re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), ""), str(value or ""))


def endpoints(config: dict) -> dict[str, dict]:
    """The endpoints offered: name -> what the client sees, plus (under "_provider") how to reach it."""
    offered: dict[str, dict] = {}
    for name, variable in BUILTIN:
        key = os.environ.get(variable, "")
        if not key:
            continue
        models = [m.strip() for m in os.environ.get(f"{name.upper()}_MODELS", "").split(",") if m.strip()]
        if name == "openAI":
            models = models or [m.strip() for m in os.environ.get("OPENAI_MODELS", "").split(",") if m.strip()]
            models = models or ["gpt-4o-mini", "gpt-4o"]
            provider = {"key": key, "base_url": os.environ.get("OPENAI_REVERSE_PROXY") or OPENAI_URL}
        else:
            provider = None  # not an OpenAI-compatible API: this stand-in does not relay it
        offered[name] = {"type": name, "userProvide": key == "user_provided", "models": models,
                         "_provider": provider}
    custom = ((config.get("endpoints") or {}) if isinstance(config.get("endpoints"), dict) else {}).get("custom")
    for entry in custom if isinstance(custom, list) else []:
        if not isinstance(entry, dict) or not entry.get("name"):
            continue
        key, base_url = _resolve(entry.get("apiKey")), _resolve(entry.get("baseURL"))
        models = entry.get("models") if isinstance(entry.get("models"), dict) else {}
        offered[str(entry["name"])] = {
            "type": "custom", "userProvide": key == "user_provided", "userProvideURL": base_url == "user_provided",
            "models": [str(m) for m in models.get("default") or []],
            "_provider": {"key": key, "base_url": base_url}}
    wanted = [e.strip() for e in os.environ.get("ENDPOINTS", "").split(",") if e.strip()]
    if wanted:  # ENDPOINTS only filters and orders; "custom" stands for every custom endpoint
        order = {name: n for n, name in enumerate(wanted)}
        rank = {name: order.get("custom" if e["type"] == "custom" else name) for name, e in offered.items()}
        offered = {name: offered[name] for name in sorted((n for n in offered if rank[n] is not None),
                                                          key=lambda n: rank[n])}
    for n, entry in enumerate(offered.values()):
        entry["order"] = n
    return offered


def public(offered: dict[str, dict]) -> dict[str, dict]:
    return {name: {k: v for k, v in entry.items() if not k.startswith("_")} for name, entry in offered.items()}


class Log:
    """The request log file, where RumiTalk writes its logs (LIBRECHAT_LOG_DIR, else <cwd>/logs)."""

    def __init__(self) -> None:
        self.file = None
        self.lock = threading.Lock()

    def open(self) -> None:
        directory = Path(os.environ.get("LIBRECHAT_LOG_DIR") or Path.cwd() / "logs")
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.file = open(directory / "rumitalk-stub.log", "a", buffering=1)
        except OSError as exc:
            print(f"cannot write logs to {directory}: {exc}", file=sys.stderr, flush=True)

    def write(self, record: dict) -> None:
        if self.file is not None:
            with self.lock:
                self.file.write(json.dumps({"time": time.time(), "replica": REPLICA, **record}) + "\n")


LOG = Log()
SETTINGS: dict = {}  # filled at start: the secrets, the token lifetimes, the config file's content


# ---- tokens -----------------------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: dict, secret: str) -> str:
    """A JWT, HS256."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def verify(token: str, secret: str) -> dict | None:
    """The claims of a JWT signed with `secret` that has not expired or been revoked here; else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1]))
        mac = _unb64(parts[2])
    except ValueError:
        return None
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not hmac.compare_digest(mac, expected):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), (int, float)) or claims["exp"] <= time.time():
        return None
    with _lock:
        if claims.get("jti") in _revoked or claims.get("sid") in _revoked:
            return None
    return claims


# ---- shared state ------------------------------------------------------------------------------------------------

class Redis:
    """Just enough of the Redis protocol (RESP) for the stand-in's shared state: one command at a time
    over one connection, reconnected after a failure."""

    def __init__(self, uri: str) -> None:
        url = urlsplit(uri)
        self.address = (url.hostname or "localhost", url.port or 6379)
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()

    def command(self, *args: str) -> object:
        with self.lock:
            try:
                return self._command(args)
            except OSError:
                self.close()
                return self._command(args)  # once more on a new connection (Redis restarted, moved)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock, self.reader = None, None

    def _command(self, args: tuple[str, ...]) -> object:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=5)
            self.reader = self.sock.makefile("rb")
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self) -> object:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"Redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = self.reader.read(int(rest) + 2)
            return data[:-2]
        if kind == b"*":
            return [self._reply() for _ in range(max(int(rest), 0))]
        raise ConnectionError(f"Redis answered {line!r}")


REDIS: Redis | None = None  # set at start, from the settings (main)
_counter = 0


def count() -> dict:
    """One more on the shared counter: in Redis when RumiTalk is told to use it, else in this process."""
    global _counter
    if REDIS is not None:
        return {"value": REDIS.command("INCR", "rumitalk-stub:counter"), "shared": True}
    with _lock:
        _counter += 1
        return {"value": _counter, "shared": False}


# ---- generations ------------------------------------------------------------------------------------------------

class Generation:
    """One reply being generated: its events, kept so a late or resumed stream gets them all."""

    def __init__(self, user: str, endpoint: str) -> None:
        self.id = secrets.token_hex(12)
        self.user, self.endpoint = user, endpoint
        self.events: list[bytes] = []
        self.done = False
        self.aborted = False
        self.finished_at: float | None = None
        self.cond = threading.Condition()

    def add(self, data: dict, event: str | None = None) -> None:
        with self.cond:  # each event has its number as its id, for a stream resumed with Last-Event-ID
            head = f"id: {len(self.events)}\n" + (f"event: {event}\n" if event else "")
            chunk = f"{head}data: {json.dumps(data)}\n\n"
            self.events.append(chunk.encode())
            self.cond.notify_all()

    def finish(self) -> None:
        with self.cond:
            self.done, self.finished_at = True, time.time()
            self.cond.notify_all()


_generations: dict[str, Generation] = {}


def _keep(generation: Generation) -> None:
    with _lock:
        for ident in [i for i, g in _generations.items() if g.finished_at and g.finished_at < time.time() - 600]:
            del _generations[ident]
        _generations[generation.id] = generation


def generate(generation: Generation, provider: dict | None, entry: dict, text: str, model: str) -> None:
    """Ask the provider for a streamed reply and relay each token the moment it arrives."""
    try:
        if provider is None:
            raise RuntimeError(f"the stand-in relays only OpenAI-compatible providers, not {generation.endpoint}")
        if provider["key"] == "user_provided" or not provider["key"]:
            raise RuntimeError(f"no API key for {generation.endpoint}: enter your key in the settings")
        if not provider["base_url"] or provider["base_url"] == "user_provided":
            raise RuntimeError(f"no base URL for {generation.endpoint}")
        request = urllib.request.Request(
            provider["base_url"].rstrip("/") + "/chat/completions", method="POST",
            data=json.dumps({"model": model, "stream": True,
                             "messages": [{"role": "user", "content": text}]}).encode(),
            headers={"Authorization": f"Bearer {provider['key']}", "Content-Type": "application/json",
                     "Accept": "text/event-stream"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        reply = []
        with opener.open(request, timeout=30) as response:
            while line := response.readline():
                if generation.aborted:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices") or []:
                    token = (choice.get("delta") or {}).get("content")
                    if token:
                        reply.append(token)
                        generation.add({"text": token, "sent": time.time(), "provider_sent": chunk.get("sent")})
        generation.add({"final": True, "text": "".join(reply), "endpoint": generation.endpoint, "model": model,
                        "aborted": generation.aborted, "sent": time.time()})
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        generation.add({"error": True, "message": f"the provider answered {exc.code}: {detail}"}, event="error")
    except Exception as exc:  # every failure ends the stream with an error event, as RumiTalk's do
        generation.add({"error": True, "message": f"{type(exc).__name__}: {exc}"}, event="error")
    finally:
        generation.finish()


# ---- the server -------------------------------------------------------------------------------------------------

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


def _search_enabled() -> bool:
    """RumiTalk's answer: search is on when SEARCH=true and Meilisearch at MEILI_HOST accepts
    MEILI_MASTER_KEY (an authenticated route: GET /indexes)."""
    host, key = os.environ.get("MEILI_HOST"), os.environ.get("MEILI_MASTER_KEY", "")
    if os.environ.get("SEARCH") != "true" or not host:
        return False
    asked = urllib.request.Request(f"{host.rstrip('/')}/indexes", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(asked, timeout=3) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _web_files() -> dict[str, tuple[str, bytes]]:
    """The web app's files by URL path (lowercase, as routes match)."""
    files = {}
    for path in sorted(p for p in WEB.rglob("*") if p.is_file()):
        url = "/" + str(path.relative_to(WEB)).replace(os.sep, "/")
        files[url.lower()] = (TYPES.get(path.suffix, "application/octet-stream"), path.read_bytes())
    return files


FILES = _web_files()


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

    def end_headers(self) -> None:
        self.send_header("X-Stub-Replica", REPLICA)
        # a header RumiTalk would set itself, asked for by a test: `X-Stub-Answer-Header: Name: value`
        for wanted in self.headers.get_all("X-Stub-Answer-Header") or ():
            name, _, value = wanted.partition(":")
            self.send_header(name.strip(), value.strip())
        super().end_headers()

    def _record(self) -> str:
        seen = {"method": self.command, "path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}
        line = json.dumps(seen)
        with _print_lock:  # one whole line at a time, whatever other requests print
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        LOG.write(seen)
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
        if path == "/api" or path.startswith("/api/"):
            return self._api(path, url.query, body, record)
        if path in FILES and path != "/index.html":
            content_type, data = FILES[path]
            return self._send(200, content_type, data, record)
        if path.startswith("/assets/"):
            return self._send(404, "text/plain", b"Not Found", record)
        # the single-page app's fallback: index.html, never cached
        return self._send(200, "text/html; charset=utf-8", FILES["/index.html"][1], record,
                          {"Cache-Control": NO_STORE})

    def _api(self, path: str, query: str, body: bytes, record: str) -> None:
        if path == "/api/auth/login" and self.command == "POST":
            form = self._form(body)
            if form.get("email") == EMAIL and form.get("password") == PASSWORD:
                ttl = min(float(form.get("ttl") or SETTINGS["session_expiry"]), SETTINGS["session_expiry"])
                return self._issue(ttl, secrets.token_hex(8), record)
            return self._json(401, {"message": "Email or password is incorrect"}, record)
        if path == "/api/auth/refresh" and self.command == "POST":
            cookie = self._cookie("refreshToken")
            if not cookie:
                return self._send(200, "text/plain", b"Refresh token not provided", record)
            claims = verify(cookie, SETTINGS["jwt_refresh_secret"])
            if claims is None:
                return self._json(401, {"message": "Invalid refresh token"}, record)
            return self._issue(SETTINGS["session_expiry"], claims["sid"], record)
        if path == "/api/auth/logout" and self.command == "POST":
            for token, secret in ((self._bearer(), SETTINGS["jwt_secret"]),
                                  (self._cookie("refreshToken"), SETTINGS["jwt_refresh_secret"])):
                claims = verify(token, secret)
                if claims:
                    with _lock:
                        _revoked.update(v for v in (claims.get("jti"), claims.get("sid")) if v)
            return self._json(200, {"message": "Logout successful"}, record,
                              {"Set-Cookie": "refreshToken=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"})
        if path in PUBLIC or path.startswith("/api/share/"):
            return self._json(200, {"public": True, "path": self.path}, record)
        claims = verify(self._bearer(), SETTINGS["jwt_secret"])
        if claims is None:
            return self._json(401, {"message": "Unauthorized"}, record)
        if path == "/api/user":
            return self._json(200, {"id": claims["id"], "email": EMAIL}, record)
        if path == "/api/endpoints":
            return self._json(200, public(endpoints(SETTINGS["config"])), record)
        if path == "/api/search/enable":
            return self._json(200, _search_enabled(), record)
        if path == "/api/models":
            return self._json(200, {n: e["models"] for n, e in endpoints(SETTINGS["config"]).items()}, record)
        if path.startswith("/api/agents/chat/"):
            return self._chat(path.removeprefix("/api/agents/chat/"), body, claims, record)
        if path == "/api/stream":
            return self._stream(parse_qs(query), record)
        if path == "/api/files" and self.command == "POST":
            return self._json(200, {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}, record)
        if path == "/api/compressed":
            return self._compressed(record)
        if path == "/api/counter" and self.command == "POST":
            return self._json(200, count(), record)
        return self._json(200, {"ok": True, "path": self.path}, record)

    @staticmethod
    def _form(body: bytes) -> dict:
        try:
            form = json.loads(body or b"{}")
        except ValueError:
            return {}
        return form if isinstance(form, dict) else {}

    def _chat(self, rest: str, body: bytes, claims: dict, record: str) -> None:
        """Start a reply (POST <endpoint>), stream it (GET stream/<id>), or stop it (POST abort)."""
        if rest.startswith("stream/") and self.command == "GET":
            with _lock:
                generation = _generations.get(rest.removeprefix("stream/"))
            if generation is None or generation.user != claims["id"]:
                return self._json(404, {"message": "Stream not found"}, record)
            last = self.headers.get("Last-Event-ID", "")
            return self._relay(generation, int(last) + 1 if last.isdigit() else 0, record)
        if self.command != "POST":
            return self._json(404, {"message": "Not Found"}, record)
        form = self._form(body)
        if rest == "abort":
            with _lock:
                generation = _generations.get(str(form.get("streamId") or form.get("conversationId") or ""))
            if generation is None or generation.user != claims["id"]:
                return self._json(404, {"message": "Stream not found"}, record)
            generation.aborted = True
            return self._json(200, {"aborted": generation.id}, record)
        offered = endpoints(SETTINGS["config"])
        name = next((n for n in offered if n.lower() == rest), None)
        if name is None:
            return self._json(400, {"message": f"Endpoint {rest} is not configured", "endpoints": list(offered)},
                              record)
        if not isinstance(form.get("text"), str) or not form["text"].strip():
            return self._json(400, {"message": "text is required"}, record)
        entry = offered[name]
        model = str(form.get("model") or (entry["models"] or ["default"])[0])
        generation = Generation(claims["id"], name)
        _keep(generation)
        threading.Thread(target=generate, args=(generation, entry["_provider"], entry, form["text"], model),
                         daemon=True).start()
        return self._json(200, {"streamId": generation.id, "conversationId": generation.id, "endpoint": name,
                                "model": model}, record)

    def _relay(self, generation: Generation, sent: int, record: str) -> None:
        """The reply's events from number `sent` on as server-sent events, each written the moment it exists."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache, no-transform")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("X-Stub-Request", record)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        try:
            for _ in range(3600):  # at most an hour of silence in one-second waits
                with generation.cond:
                    if sent == len(generation.events) and not generation.done:
                        generation.cond.wait(timeout=1)
                    fresh, done = generation.events[sent:], generation.done
                for chunk in fresh:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                sent += len(fresh)
                if done and sent == len(generation.events):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _bearer(self) -> str:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token if scheme.lower() == "bearer" else ""

    def _cookie(self, name: str) -> str:
        for part in (self.headers.get("Cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return ""

    def _issue(self, ttl: float, session: str, record: str) -> None:
        """A new token, and the refresh cookie (of the same session) that can renew it."""
        now = time.time()
        token = sign({"id": USER_ID, "email": EMAIL, "sid": session, "jti": secrets.token_hex(8), "iat": now,
                      "exp": now + ttl}, SETTINGS["jwt_secret"])
        refresh_ttl = SETTINGS["refresh_expiry"]
        refresh = sign({"id": USER_ID, "sid": session, "iat": now, "exp": now + refresh_ttl},
                       SETTINGS["jwt_refresh_secret"])
        body = json.dumps({"token": token, "user": {"id": USER_ID, "email": EMAIL}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", f"refreshToken={refresh}; HttpOnly; Secure; SameSite=Strict; Path=/; "
                                       f"Max-Age={int(refresh_ttl)}")
        self.send_header("Set-Cookie", f"token_provider=librechat; HttpOnly; Secure; SameSite=Strict; Path=/; "
                                       f"Max-Age={int(refresh_ttl)}")
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

    def _json(self, status: int, payload: dict, record: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(payload).encode(), record, headers)

    def _send(self, status: int, content_type: str, body: bytes, record: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Stub-Request", record)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _seconds(variable: str, default_ms: float) -> float:
    """A duration RumiTalk reads in milliseconds (SESSION_EXPIRY, REFRESH_TOKEN_EXPIRY), in seconds."""
    try:
        return float(os.environ.get(variable) or default_ms) / 1000
    except ValueError:
        return default_ms / 1000


def main() -> None:
    load_dotenv(Path.cwd() / ".env")
    LOG.open()
    SETTINGS.update(
        jwt_secret=os.environ.get("JWT_SECRET") or DEV_JWT_SECRET,
        jwt_refresh_secret=os.environ.get("JWT_REFRESH_SECRET") or DEV_JWT_REFRESH_SECRET,
        session_expiry=_seconds("SESSION_EXPIRY", 15 * 60 * 1000),
        refresh_expiry=_seconds("REFRESH_TOKEN_EXPIRY", 7 * 24 * 3600 * 1000),
        config=load_config(os.environ.get("CONFIG_PATH") or str(Path.cwd() / "librechat.yaml")),
    )
    global REDIS
    if os.environ.get("USE_REDIS") == "true" and os.environ.get("REDIS_URI"):
        REDIS = Redis(os.environ["REDIS_URI"])
        _log(f"shared state in Redis at {REDIS.address[0]}:{REDIS.address[1]}")
    _log(f"endpoints offered: {', '.join(endpoints(SETTINGS['config'])) or 'none'}")
    port = int(os.environ.get("PORT", "3080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    _log(f"rumitalk-stub listening on {port}")
    server.serve_forever()


if __name__ == "__main__":
    main()

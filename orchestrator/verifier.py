"""The Basic Auth verifier: checks a credential against a user file with bcrypt, in a process of its own.

nginx asks it only on a cache miss, after its rate limits (nginx/snippets/auth-verifier.conf.j2), over
HTTP on a unix socket on a tmpfs volume that only nginx and this container mount. bcrypt runs in a small
thread pool at a low CPU priority, so it never blocks an event loop that serves cached requests, and
nginx gets the CPU first. A user name that is not in the file is checked against a dummy hash of the
same cost, so both refusals cost one bcrypt and tell nothing about which names exist. Its event loop keeps
a heartbeat on the same volume (Heartbeat): nginx lets no credential in without it, cached ones neither.

It counts what it does, and receives from nginx (as syslog datagrams on a second socket of the same
volume) what only nginx knows: cache hits and misses, throttled refusals. The counters are served as
Prometheus text on the stack's network (never published), and per minute as JSON for `rumistack status`.

This file imports only the standard library and bcrypt: the image is a Python base, bcrypt, and this
one file (verifier.Dockerfile).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import concurrent.futures
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import typing
import urllib.request

import bcrypt

# the hashes rumistack writes ($2y$), and the other spellings of bcrypt
BCRYPT = re.compile(rb"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
DEFAULT_COST = 12  # the dummy's cost when the file has no bcrypt hash to take it from
PASSWORD_BYTES = 72  # bcrypt reads no further
# a realm as rumistack's config accepts it (config._REALM), so the challenge never carries anything else
REALM = re.compile(r"[A-Za-z0-9 _.,:!?()@#%&*+=/'<>^|~-]{1,64}")
EVENT_SIZE = 512  # an auth event's datagram is far smaller
KEPT_FILES = 8  # parsed user files kept; each change of the users makes a new one
MINUTES = 15  # per-minute figures kept for `rumistack status`
WORKERS = 2  # bcrypt threads: this machine's kind has two cores, and nginx's limits admit 2 a second
NICE = 10  # bcrypt yields the CPU to nginx
BEAT_SECONDS = 0.25  # between two refreshes of the heartbeat: the next second's file is there well before it begins
# counters: name -> help; those with a reason or result label list them
COUNTERS = {
    "verifications": "Credentials the verifier checked.",
    "successes": "Credentials that matched.",
    "failures": "Credentials refused, by reason.",
    "bcrypt": "bcrypt runs, by the hash checked against (the user's, or the dummy for an unknown name).",
    "throttled": "Requests nginx refused with 429 because a rate limit was exceeded.",
    "cache": "Requests with Basic credentials, by whether nginx's cache of verified credentials had them.",
}
LABELS = {
    "failures": ("reason", ("wrong_password", "unknown_user", "unsupported_hash", "malformed")),
    "bcrypt": ("hash", ("user", "dummy")),
    "cache": ("result", ("hit", "miss")),
}


class Counts:
    """Counters since the start, and the same per minute for the last MINUTES minutes."""

    def __init__(self) -> None:
        self.total: collections.Counter[str] = collections.Counter()
        self.minutes: dict[int, collections.Counter[str]] = {}
        self.lock = threading.Lock()  # the events' thread adds while the event loop reads

    def add(self, key: str, now: float | None = None) -> None:
        self.add_all(collections.Counter({key: 1}), now)

    def add_all(self, counted: collections.Counter[str], now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // 60)
        with self.lock:
            self.total.update(counted)
            self.minutes.setdefault(minute, collections.Counter()).update(counted)
            for old in [m for m in self.minutes if m <= minute - MINUTES]:
                del self.minutes[old]

    def prometheus(self) -> str:
        with self.lock:
            total = collections.Counter(self.total)
        lines = []
        for name, help_text in COUNTERS.items():
            metric = f"rumistack_auth_{name}_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            if name in LABELS:
                label, values = LABELS[name]
                lines += [f'{metric}{{{label}="{v}"}} {total[f"{name}:{v}"]}' for v in values]
            else:
                lines.append(f"{metric} {total[name]}")
        return "\n".join(lines) + "\n"

    def recent(self, now: float | None = None) -> list[dict]:
        """The last MINUTES minutes, oldest first, each {"minute": its start (unix time), counter: count}, a
        labelled counter as name_value (failures_wrong_password)."""
        current = int((time.time() if now is None else now) // 60)
        with self.lock:
            return [{"minute": m * 60, **{k.replace(":", "_"): v for k, v in self.minutes.get(m, {}).items()}}
                    for m in range(current - MINUTES + 1, current + 1)]


class UserFile:
    """One user file, parsed once: its paths are named by content, so it never changes."""

    def __init__(self, data: bytes) -> None:
        self.hashes: dict[bytes, bytes] = {}
        for line in data.splitlines():
            name, sep, hashed = line.strip().partition(b":")
            if sep and name and not name.startswith(b"#"):
                self.hashes[name] = hashed
        costs = [int(m[1]) for h in self.hashes.values() if (m := BCRYPT.fullmatch(h))]
        # the dearest hash of the file: a dummy any cheaper would tell a name apart from the slowest user
        self.cost = max(costs, default=DEFAULT_COST)


def parse_basic(header: str) -> tuple[bytes, bytes] | None:
    """(name, password) of a Basic Authorization header, None if it is not one."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    name, sep, password = decoded.partition(b":")
    return (name, password) if sep and name else None


def log(message: str) -> None:
    """One line on stderr, dated as nginx dates its error log (fail2ban's date pattern reads it)."""
    print(f"{time.strftime('%Y/%m/%d %H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _quoted(name: bytes) -> str:
    # a user name cannot forge a field of the line: quotes, backslashes and control bytes are escaped
    return json.dumps(name.decode("utf-8", "backslashreplace"))


class Verifier:
    def __init__(self, pool: concurrent.futures.Executor, counts: Counts, user_file: str,
                 fixed: bool = False) -> None:
        # a user file of the auth volume, named by its content (rumistack.volumes.publish_user_file); or,
        # `fixed`, the file itself: a swarm secret, which stays the same for the life of the task
        self.user_file = re.compile(re.escape(user_file) + ("" if fixed else "-[0-9a-f]{16}"))
        self.pool = pool
        self.counts = counts
        self.files: collections.OrderedDict[str, UserFile] = collections.OrderedDict()
        self.dummies: dict[int, bytes] = {}

    def _file(self, path: str) -> UserFile:
        found = self.files.get(path)
        if found is None:
            with open(path, "rb") as f:
                found = self.files[path] = UserFile(f.read())
            while len(self.files) > KEPT_FILES:
                self.files.popitem(last=False)
        return found

    async def _bcrypt(self, password: bytes, hashed: bytes) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self.pool, bcrypt.checkpw, password, hashed)

    async def _dummy(self, cost: int) -> bytes:
        if cost not in self.dummies:
            salt = bcrypt.gensalt(cost)
            self.dummies[cost] = await asyncio.get_running_loop().run_in_executor(
                self.pool, bcrypt.hashpw, os.urandom(16).hex().encode(), salt)
        return self.dummies[cost]

    async def verify(self, authorization: str, path: str, client: str) -> int:
        """The answer for nginx: 204 the credential matches, 401 it does not, 500 the user file is unusable
        (never 403: nginx reads that as throttled)."""
        if not self.user_file.fullmatch(path):
            log(f"[error] verifier: no user file to check against ({path!r} is not one), client: {client}")
            return 500
        try:
            users = self._file(path)
        except OSError as exc:
            log(f"[error] verifier: cannot read the user file {path}: {exc.strerror}, client: {client}")
            return 500
        self.counts.add("verifications")
        credential = parse_basic(authorization)
        if credential is None:
            self.counts.add("failures:malformed")
            return 401
        name, password = credential
        password = password[:PASSWORD_BYTES]
        hashed = users.hashes.get(name)
        if hashed is not None and not BCRYPT.fullmatch(hashed):
            self.counts.add("failures:unsupported_hash")
            log(f"[error] verifier: user {_quoted(name)} has a hash that is not bcrypt, refused, client: {client}")
            return 401
        if hashed is None:
            await self._bcrypt(password, await self._dummy(users.cost))
            self.counts.add("bcrypt:dummy")
            self.counts.add("failures:unknown_user")
            log(f"[error] verifier: user {_quoted(name)} was not found, client: {client}")
            return 401
        matched = await self._bcrypt(password, hashed)
        self.counts.add("bcrypt:user")
        if not matched:
            self.counts.add("failures:wrong_password")
            log(f"[error] verifier: user {_quoted(name)}: password mismatch, client: {client}")
            return 401
        self.counts.add("successes")
        return 204


REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           500: "Internal Server Error"}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]] | None:
    """(method, target, headers) of the next request on the connection; None when it closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
        return None  # nginx sends no body; anything else is not nginx
    return parts[0], parts[1], headers


class Answer(typing.NamedTuple):
    """An HTTP answer of the verifier's servers."""

    status: int
    body: bytes = b""
    kind: str = "text/plain"
    extra: str = ""  # more header lines, each ending in CRLF

    def write(self, writer: asyncio.StreamWriter, head: bool) -> None:
        writer.write(f"HTTP/1.1 {self.status} {REASONS[self.status]}\r\nContent-Type: {self.kind}\r\n{self.extra}"
                     f"Content-Length: {len(self.body)}\r\n\r\n".encode() + (b"" if head else self.body))


def challenge(realm: str) -> str:
    """The WWW-Authenticate header of a refusal, which nginx hands on to the client."""
    return f'WWW-Authenticate: Basic realm="{realm if REALM.fullmatch(realm) else "Restricted"}"\r\n'


Route = typing.Callable[[dict[str, str]], typing.Awaitable[Answer]]  # a request's headers to its answer
Handler = typing.Callable[[asyncio.StreamReader, asyncio.StreamWriter], typing.Awaitable[None]]


class Connections:
    """The connections kept open between requests (nginx's upstream keepalive), so that a stop ends them:
    from Python 3.12 on, a server's close waits for every connection, and nginx keeps an idle one for up
    to a minute, longer than Docker waits before it kills a stopping container."""

    def __init__(self) -> None:
        self.idle: set[asyncio.StreamWriter] = set()
        self.stopping = False

    def stop(self) -> None:
        """Close the idle connections now; a busy one closes once its answer is written."""
        self.stopping = True
        for writer in self.idle:
            writer.close()


def _handler(routes: dict[str, Route], connections: Connections) -> Handler:
    """A connection's requests, each answered by the route of its target (404 for any other); the
    connection stays open for the next one until the client closes it or `connections` stops."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not connections.stopping:
                connections.idle.add(writer)
                try:
                    request = await _read_request(reader)
                finally:
                    connections.idle.discard(writer)
                if request is None:
                    break
                method, target, headers = request
                route = routes.get(target)
                answer = Answer(404) if route is None else await route(headers)
                answer.write(writer, head=method == "HEAD")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
    return handle


def verify_handler(verifier: Verifier, connections: Connections) -> Handler:
    async def verify(headers: dict[str, str]) -> Answer:
        status = await verifier.verify(headers.get("authorization", ""), headers.get("x-rumistack-user-file", ""),
                                       headers.get("x-rumistack-client", "-"))
        return Answer(status, extra=challenge(headers.get("x-rumistack-realm", "")) if status == 401 else "")

    async def healthy(_: dict[str, str]) -> Answer:
        return Answer(204)

    return _handler({"/verify": verify, "/health": healthy}, connections)


def metrics_handler(counts: Counts, connections: Connections) -> Handler:
    async def metrics(_: dict[str, str]) -> Answer:
        return Answer(200, counts.prometheus().encode(), "text/plain; version=0.0.4")

    async def minutes(_: dict[str, str]) -> Answer:
        return Answer(200, json.dumps(counts.recent()).encode(), "application/json")

    return _handler({"/metrics": metrics, "/minutes": minutes}, connections)


def tally(data: bytes, counted: collections.Counter[str]) -> None:
    """One of nginx's access log lines for auth (syslog: `<pri>date tag: CACHE STATUS`): a cache hit or miss
    of a request with Basic credentials, and throttled refusals (429)."""
    fields = data.rpartition(b": ")[2].split()
    if not fields:
        return
    cache, status = (fields[0] if len(fields) > 1 else b"-"), fields[-1]
    if cache == b"HIT":
        counted["cache:hit"] += 1
    elif cache not in (b"-", b""):
        counted["cache:miss"] += 1
    if status == b"429":
        counted["throttled"] += 1


def count_events(events: socket.socket, counts: Counts) -> None:
    """nginx's auth events, read in a thread of their own and counted a batch at a time: with cached
    credentials they come at the rate of requests, and one turn of the event loop each cost more CPU than
    nginx's whole answer."""
    while True:
        counted: collections.Counter[str] = collections.Counter()
        data = events.recv(EVENT_SIZE)  # waits for the next one
        try:
            while True:
                tally(data, counted)
                data = events.recv(EVENT_SIZE, socket.MSG_DONTWAIT)  # and takes all that queued meanwhile
        except BlockingIOError:
            pass
        counts.add_all(counted)


class Heartbeat:
    """Empty files named by a prefix and the epoch second, for the previous, current and next second, which
    the event loop keeps (keep). nginx lets a credential in only while the file of its current second exists,
    so a verifier that dies or hangs closes the door within two seconds, where a file that only said
    "started" would stay behind. The previous second's file is for nginx's clock, which it reads once a
    turn of its own event loop and so may lag; the next one is there before its second begins."""

    def __init__(self, directory: str, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix
        self.name = re.compile(re.escape(prefix) + r"[0-9]+")

    def files(self) -> set[str]:
        """The heartbeat's files in the directory: this verifier's, and any a killed one left."""
        return {name for name in os.listdir(self.directory) if self.name.fullmatch(name)}

    def beat(self, now: float | None = None) -> None:
        """The files of the second before `now`, its own and the next made; any other removed."""
        second = int(time.time() if now is None else now)
        wanted = {f"{self.prefix}{s}" for s in (second - 1, second, second + 1)}
        there = self.files()
        for name in wanted - there:
            descriptor = os.open(os.path.join(self.directory, name), os.O_WRONLY | os.O_CREAT, 0o640)
            os.fchmod(descriptor, 0o640)  # nginx's workers read it by the group, whatever the umask
            os.close(descriptor)
        self.remove(there - wanted)

    def remove(self, names: set[str]) -> None:
        for name in names:
            try:
                os.unlink(os.path.join(self.directory, name))
            except FileNotFoundError:
                pass  # a second verifier (a swarm's start-first update) removed it first

    async def keep(self) -> None:
        """Beats until cancelled; an error ends it, and with it the verifier."""
        while True:
            self.beat()
            await asyncio.sleep(BEAT_SECONDS)


def _unix_path(path: str) -> str:
    """A path for a new socket: a socket left by an earlier run goes first."""
    if os.path.exists(path):
        os.unlink(path)
    return path


async def serve(args: argparse.Namespace) -> None:
    os.nice(NICE)  # threads inherit it: bcrypt runs at this priority
    counts = Counts()
    verifier = Verifier(concurrent.futures.ThreadPoolExecutor(WORKERS), counts, args.user_file, args.fixed_user_file)
    loop = asyncio.get_running_loop()
    events = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    events.bind(_unix_path(os.path.join(args.dir, "events.sock")))
    threading.Thread(target=count_events, args=(events, counts), daemon=True, name="events").start()
    host, _, port = args.metrics.rpartition(":")
    # the scraper's connections need no closing at the stop: that server is never closed, the process ends
    await asyncio.start_server(metrics_handler(counts, Connections()), host, int(port))
    path = _unix_path(os.path.join(args.dir, "verify.sock"))
    # a new verifier starts before the old one stops (a swarm's start-first update): the old one must not
    # take the new one's socket away as it closes, which Python 3.13 does unless told not to
    keep = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
    connections = Connections()
    server = await asyncio.start_unix_server(verify_handler(verifier, connections), path, **keep)
    for name in ("events.sock", "verify.sock"):
        os.chmod(os.path.join(args.dir, name), 0o660)  # nginx's workers reach them by the group
    log(f"[notice] verifier: listening on {path}, metrics on {args.metrics}")
    # the heartbeat says a verifier serves: nginx lets no credential in without it, cached ones neither
    heartbeat = Heartbeat(args.dir, args.heartbeat)
    own = os.stat(path).st_ino
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    beating = asyncio.create_task(heartbeat.keep())
    async with server:
        await asyncio.wait((beating, asyncio.create_task(stopping.wait())), return_when=asyncio.FIRST_COMPLETED)
        beating.cancel()
        # away with the heartbeat and the sockets at once, then nginx's idle connections, before the
        # server's close waits for them (from Python 3.12 on)
        _withdraw(args.dir, heartbeat, own)
        connections.stop()
    if not stopping.is_set():
        beating.result()  # the heartbeat failed: its error ends the process, and Docker starts a new one


def _withdraw(directory: str, heartbeat: Heartbeat, own: int) -> None:
    """The heartbeat and the sockets removed, unless a newer verifier has bound the socket since (a swarm's
    start-first update), which then serves in this one's place. `own`: the inode of this one's socket."""
    try:
        if os.stat(os.path.join(directory, "verify.sock")).st_ino == own:
            heartbeat.remove(heartbeat.files())
            for name in ("events.sock", "verify.sock"):
                os.unlink(os.path.join(directory, name))
            log("[notice] verifier: stopped, its heartbeat and sockets removed")
    except FileNotFoundError:
        pass


def health(args: argparse.Namespace) -> int:
    """The container's health check: the socket nginx uses answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(os.path.join(args.dir, "verify.sock"))
            s.sendall(b"HEAD /health HTTP/1.1\r\nHost: verifier\r\n\r\n")
            return 0 if s.recv(64).startswith(b"HTTP/1.1 204") else 1
        except OSError:
            return 1


def show(args: argparse.Namespace) -> int:
    """The counters (`metrics`) or the per-minute figures as JSON (`minutes`, which `rumistack status`
    runs in the container) on stdout."""
    port = args.metrics.rpartition(":")[2]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{args.command}", timeout=5) as answer:
        sys.stdout.write(answer.read().decode())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("serve", "health", "metrics", "minutes"))
    parser.add_argument("--dir", required=True, help="the directory of the sockets shared with nginx")
    parser.add_argument("--metrics", required=True, help="HOST:PORT of the metrics endpoint")
    parser.add_argument("--user-file", default="", help="the user file link: only the files it may name are read")
    parser.add_argument("--heartbeat", default="",
                        help="serve: the prefix of the heartbeat's file names in --dir (the epoch second follows)")
    parser.add_argument("--fixed-user-file", action="store_true",
                        help="--user-file is the user file itself, not a link (a swarm secret)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        if not args.heartbeat:
            parser.error("serve needs --heartbeat: without it nginx lets nobody in")
        asyncio.run(serve(args))
        return 0
    return health(args) if args.command == "health" else show(args)


if __name__ == "__main__":
    sys.exit(main())

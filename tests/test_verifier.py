"""The verifier's parsing and its refusals, in-process (orchestrator/verifier.py): each refusal of a name
costs one bcrypt of the file's cost, known or not."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import re
import shutil
import socket
import threading
import time

import bcrypt
import pytest

from rumistack import verifier
from rumistack.layout import AUTH_DIR, USER_FILE

PREFIX = f"{AUTH_DIR}/{USER_FILE}"


def _hash(password: str, cost: int = 4, prefix: bytes = b"$2y$") -> bytes:
    return prefix + bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost))[4:]


def test_a_user_file_is_parsed_once_into_names_and_hashes_and_its_dearest_cost():
    data = b"# a comment\n\nalice:" + _hash("a", 5) + b"\nbob:" + _hash("b", 6, b"$2b$") + b"\nbroken line\ncarol:{SHA}x\n"
    users = verifier.UserFile(data)
    assert set(users.hashes) == {b"alice", b"bob", b"carol"}
    assert users.cost == 6
    assert verifier.UserFile(b"").cost == verifier.DEFAULT_COST
    assert verifier.UserFile(b"<html>oops</html>\n").hashes == {}


@pytest.mark.parametrize("header, expected", [
    ("Basic " + base64.b64encode(b"alice:pass:word").decode(), (b"alice", b"pass:word")),
    ("basic  " + base64.b64encode(b"a:").decode(), (b"a", b"")),
    ("Bearer abc", None), ("Basic !!!", None), ("Basic " + base64.b64encode(b"nocolon").decode(), None),
    ("Basic " + base64.b64encode(b":nouser").decode(), None), ("", None),
])
def test_basic_credentials_are_parsed_strictly(header, expected):
    assert verifier.parse_basic(header) == expected


class _Counting(concurrent.futures.ThreadPoolExecutor):
    """A pool that remembers each bcrypt it runs: the checked hash's cost."""

    def __init__(self) -> None:
        super().__init__(1)
        self.costs: list[int] = []

    def submit(self, fn, *args):
        if fn is bcrypt.checkpw:
            self.costs.append(int(args[1][4:6]))
        return super().submit(fn, *args)


def _run(coroutine):
    """The coroutine's result, from an event loop of its own thread: the browser tests' playwright
    keeps an event loop running in the main thread for the whole session, and asyncio.run refuses
    to start a second one there."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def _verify(content: bytes, name: str, password: str):
    pool = _Counting()
    counts = verifier.Counts()
    checker = verifier.Verifier(pool, counts, PREFIX)
    path = f"{PREFIX}-0123456789abcdef"
    checker.files[path] = verifier.UserFile(content)  # as if read from the auth volume
    header = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
    status = _run(checker.verify(header, path, "203.0.113.7"))
    return status, pool.costs, counts.total


def test_an_unknown_name_costs_one_bcrypt_of_the_files_cost_as_a_wrong_password_does():
    content = b"alice:" + _hash("right", 7) + b"\n"
    wrong = _verify(content, "alice", "wrong")
    unknown = _verify(content, "mallory", "wrong")
    right = _verify(content, "alice", "right")
    assert (wrong[0], wrong[1]) == (401, [7]) and wrong[2]["failures:wrong_password"] == 1
    assert (unknown[0], unknown[1]) == (401, [7]) and unknown[2]["failures:unknown_user"] == 1
    assert unknown[2]["bcrypt:dummy"] == 1 and wrong[2]["bcrypt:user"] == 1
    assert (right[0], right[1]) == (204, [7]) and right[2]["successes"] == 1


def test_a_hash_that_is_not_bcrypt_is_refused_without_checking_it():
    status, costs, counts = _verify(b"alice:$apr1$abc$defghijklmnopqrstuvwx\n", "alice", "x")
    assert (status, costs, counts["failures:unsupported_hash"]) == (401, [], 1)


def test_a_path_that_is_not_a_user_file_of_the_auth_volume_is_never_read():
    checker = verifier.Verifier(_Counting(), verifier.Counts(), PREFIX)
    for path in ("", "/etc/passwd", f"{PREFIX}-0123", f"{PREFIX}-0123456789abcdef/../x", f"/x{PREFIX}-0123456789abcdef"):
        assert _run(checker.verify("Basic YTpi", path, "203.0.113.7")) == 500
    assert checker.files == {}


def test_the_challenge_carries_only_a_realm_rumistack_accepts():
    assert verifier.challenge("Family chat") == 'WWW-Authenticate: Basic realm="Family chat"\r\n'
    assert verifier.challenge('x"\r\nSet-Cookie: a=b') == 'WWW-Authenticate: Basic realm="Restricted"\r\n'


def test_the_counters_are_prometheus_text_and_minutes():
    counts = verifier.Counts()
    counts.add("cache:hit", now=600)
    counts.add("throttled", now=601)
    counts.add("throttled", now=60 * 30)  # the first minute's figures are then too old to keep
    text = counts.prometheus()
    assert 'rumistack_auth_cache_total{result="hit"} 1\n' in text
    assert "rumistack_auth_throttled_total 2\n" in text
    assert "# TYPE rumistack_auth_verifications_total counter\n" in text
    recent = counts.recent(now=60 * 30)
    assert len(recent) == verifier.MINUTES and recent[-1] == {"minute": 1800, "throttled": 1}
    assert all(set(m) == {"minute"} for m in recent[:-1])


def test_nginx_auth_events_are_counted_in_batches_by_a_thread_of_their_own():
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    counts = verifier.Counts()
    threading.Thread(target=verifier.count_events, args=(reader, counts), daemon=True).start()
    lines = [b"HIT 200"] * 500 + [b"MISS 401", b"EXPIRED 200", b"- 429", b"MISS 429", b"nonsense"]
    for line in lines:
        writer.send(b"<190>Dec  1 13:25:39 rumistack: " + line)
    deadline = time.monotonic() + 10
    while sum(counts.total.values()) < 505 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counts.total == {"cache:hit": 500, "cache:miss": 3, "throttled": 2}


def test_the_heartbeat_keeps_the_files_of_the_previous_current_and_next_second_and_no_older_one(tmp_path):
    for left in ("alive-5", "alive-998", "verify.sock", "alive", "alive-x", "other-1000"):
        (tmp_path / left).touch()  # a killed verifier's heartbeat, and files that are not the heartbeat's
    heartbeat = verifier.Heartbeat(str(tmp_path), "alive-")
    heartbeat.beat(now=1000.99)
    assert heartbeat.files() == {"alive-999", "alive-1000", "alive-1001"}
    for name in heartbeat.files():
        status = (tmp_path / name).stat()
        assert (status.st_mode & 0o777, status.st_size) == (0o640, 0)  # nginx's workers read it by the group
    heartbeat.beat(now=1001.0)
    assert heartbeat.files() == {"alive-1000", "alive-1001", "alive-1002"}
    heartbeat.remove(heartbeat.files())  # as a stopping verifier does
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alive", "alive-x", "other-1000", "verify.sock"]


def test_the_heartbeat_is_kept_by_the_event_loop_and_an_error_ends_it(tmp_path):
    beats = tmp_path / "beats"
    beats.mkdir()
    heartbeat = verifier.Heartbeat(str(beats), "alive-")

    async def beat_for(seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(heartbeat.keep(), seconds)

    _run(beat_for(1 + 4 * verifier.BEAT_SECONDS))  # across a second's boundary
    end = int(time.time())
    seconds = sorted(int(name.removeprefix("alive-")) for name in heartbeat.files())
    assert seconds[0] + 1 == seconds[1] == seconds[2] - 1  # the last beat's, nothing older
    assert end - 1 <= seconds[1] <= end
    shutil.rmtree(beats)  # the tmpfs gone: the heartbeat ends with its error, never silently
    with pytest.raises(FileNotFoundError):
        _run(heartbeat.keep())


def test_serve_needs_the_heartbeat(capsys):
    with pytest.raises(SystemExit) as stopped:
        verifier.main(["serve", "--dir", "/nonexistent", "--metrics", "127.0.0.1:0"])
    assert stopped.value.code == 2 and "--heartbeat" in capsys.readouterr().err


def test_the_checks_keep_nginxs_connection_open_and_the_metrics_answer_once_a_connection():
    checker = verifier.Verifier(_Counting(), verifier.Counts(), PREFIX)
    path = f"{PREFIX}-0123456789abcdef"
    checker.files[path] = verifier.UserFile(b"alice:" + _hash("right") + b"\n")
    wrong = base64.b64encode(b"alice:wrong").decode()

    async def exchange(handler, requests: list[str]) -> bytes:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write("".join(f"{r}\r\nHost: verifier\r\n\r\n" for r in requests).encode())
            writer.write_eof()  # a connection the server keeps open ends when the client's side does
            answers = await reader.read()
            writer.close()
            return answers

    checks = _run(exchange(verifier.verify_handler(checker, verifier.Connections()), [
        "HEAD /health HTTP/1.1",
        f"HEAD /verify HTTP/1.1\r\nAuthorization: Basic {wrong}\r\nX-Rumistack-User-File: {path}\r\n"
        "X-Rumistack-Realm: Family",
        "HEAD /verify HTTP/1.1\r\nX-Rumistack-User-File: /etc/passwd",
        "GET /elsewhere HTTP/1.1",
    ]))
    assert re.findall(rb"HTTP/1.1 (\d+)", checks) == [b"204", b"401", b"500", b"404"]
    assert checks.count(b'WWW-Authenticate: Basic realm="Family"\r\n') == 1

    metrics = _run(exchange(verifier.metrics_handler(checker.counts, verifier.Connections()),
                            ["GET /metrics HTTP/1.1", "GET /elsewhere HTTP/1.1"]))
    head, _, body = metrics.partition(b"\r\n\r\n")
    assert re.findall(rb"HTTP/1.1 (\d+)", metrics) == [b"200", b"404"]  # a scraper's connection stays open too
    assert b"Content-Type: text/plain; version=0.0.4" in head
    assert b'rumistack_auth_failures_total{reason="wrong_password"} 1\n' in body
    minutes = _run(exchange(verifier.metrics_handler(checker.counts, verifier.Connections()), ["HEAD /minutes HTTP/1.1"]))
    assert minutes.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n") and minutes.endswith(b"\r\n\r\n")


def test_a_stop_closes_nginxs_idle_connections_at_once():
    checker = verifier.Verifier(_Counting(), verifier.Counts(), PREFIX)
    connections = verifier.Connections()

    async def stop_with_one_idle_connection() -> tuple[bytes, bytes]:
        server = await asyncio.start_server(verifier.verify_handler(checker, connections), "127.0.0.1", 0)
        async with server:
            address = server.sockets[0].getsockname()
            idle_reader, idle = await asyncio.open_connection(*address)
            idle.write(b"HEAD /health HTTP/1.1\r\nHost: verifier\r\n\r\n")
            first = await idle_reader.readuntil(b"\r\n\r\n")
            connections.stop()
            # the server closed it: the client reads the end, with no wait for a timeout
            rest = await asyncio.wait_for(idle_reader.read(), timeout=5)
            idle.close()
            return first, rest

    first, rest = _run(stop_with_one_idle_connection())
    assert first.startswith(b"HTTP/1.1 204") and rest == b"" and connections.idle == set()

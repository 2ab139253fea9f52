"""What RumiTalk's replies need from the proxy: streamed events pass at once,
silent streams live as long as configured, WebSockets upgrade, uploads up to
the limit pass, and what RumiTalk compressed passes unchanged."""

from __future__ import annotations

import base64
import gzip
import json
import os

import pytest
from conftest import running_proxy
from rumistack.config import load_config
from rumistack.render import render
from web import basic, connect, events, login, send


@pytest.mark.parametrize("accel", ["", "&accel=no"], ids=["no X-Accel-Buffering", "X-Accel-Buffering: no"])
def test_each_streamed_event_arrives_before_the_next_is_sent(containers_proxy, accel):
    proxy = containers_proxy  # the stack whose RumiTalk is reachable directly too
    token = login(proxy.port)
    target = f"/api/stream?events=4&gap=0.6{accel}"
    direct = int(proxy.stub.get_exposed_port(3080))
    for port in (proxy.port, direct):  # through the proxy, and straight from RumiTalk for comparison
        received = events(port, target, token)
        assert [e["n"] for e, _ in received] == [0, 1, 2, 3]
        for (event, arrived), (following, _) in zip(received, received[1:]):
            assert arrived < following["sent"], (port, event)


def test_a_silent_stream_lives_as_long_as_the_stream_timeout(docker_client, test_images, tmp_path):
    files = render(load_config("/nonexistent", environ={"RUMISTACK_STREAM_TIMEOUT": "2", "RUMISTACK_TLS": "off"}))
    with running_proxy(docker_client, test_images, tmp_path, files) as proxy:
        token = login(proxy.port)
        assert len(events(proxy.port, "/api/stream?events=2&gap=1", token)) == 2
        assert len(events(proxy.port, "/api/stream?events=2&gap=4", token)) == 1  # cut after 2 s of silence


def test_the_default_stream_timeout_outlasts_ten_silent_minutes():
    streaming = render(load_config("/nonexistent", environ={}))["snippets/streaming.conf"]
    assert "proxy_read_timeout 900s;" in streaming


def test_websocket_upgrade_passes_and_echoes(proxy):
    key = base64.b64encode(os.urandom(16)).decode()
    with connect(proxy.port) as sock:
        sock.sendall((
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: {basic(proxy.user, proxy.password)}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(b"\x81\x05hello")
        assert sock.recv(100) == b"\x81\x05hello"


def test_uploads_up_to_the_limit_pass_and_larger_ones_get_413(proxy):
    token = {"Authorization": f"Bearer {login(proxy.port)}", "Content-Type": "application/octet-stream"}
    limit = 25 * 1024 * 1024
    answer = send(proxy.port, "/api/files", "POST", token, os.urandom(1024) * (limit // 1024))
    assert answer.status == 200 and json.loads(answer.body)["received"] == limit
    too_big = send(proxy.port, "/api/files", "POST", token, b"x" * (limit + 1))
    assert too_big.status == 413 and too_big.seen is None


def test_what_rumitalk_compressed_passes_unchanged_and_nothing_else_is_compressed(proxy):
    token = {"Authorization": f"Bearer {login(proxy.port)}"}
    packed = send(proxy.port, "/api/compressed", headers={**token, "Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(packed.body)) == {"items": list(range(2000))}
    assert packed.body == gzip.compress(json.dumps({"items": list(range(2000))}).encode(), mtime=0)
    plain = send(proxy.port, "/api/convos", headers={**token, "Accept-Encoding": "gzip"})
    assert plain.headers.get("Content-Encoding") is None

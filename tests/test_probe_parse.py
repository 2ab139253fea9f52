"""probe's reading of raw HTTP answers: the status line, the headers, chunked
bodies, and anything that is not HTTP refused with ProbeError; and the
request target sent exactly as given, to a server on loopback."""

import socket
import threading

import pytest

from rumistack.probe import ProbeError, _parse, _unchunk, request


def test_status_headers_and_body_are_read_as_sent():
    response = _parse(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n"
                      b"Content-Type: text/html\r\nX-Twice: a\r\nX-Twice: b\r\n\r\n<p>no</p>\r\n\r\nmore", b"DER")
    assert response.status == 401
    assert response.headers["www-authenticate"] == 'Basic realm="x"'  # names are case-insensitive
    assert response.headers.get_all("X-Twice") == ["a", "b"]
    assert response.body == b"<p>no</p>\r\n\r\nmore"  # the body begins after the first empty line only
    assert response.certificate == b"DER"


def test_a_status_line_without_a_reason_and_an_answer_without_headers_are_http():
    response = _parse(b"HTTP/1.0 204\r\n\r\n")
    assert (response.status, response.body, dict(response.headers)) == (204, b"", {})


@pytest.mark.parametrize("encoding", ["chunked", "Chunked", "gzip, chunked"])
def test_a_chunked_body_is_joined_and_its_framing_dropped(encoding):
    body = b"5\r\nhello\r\n6;name=value\r\n world\r\nA\r\n, 10 bytes\r\n0\r\nX-Trailer: t\r\n\r\n"
    response = _parse(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: {encoding}\r\n\r\n".encode() + body)
    assert response.body == b"hello world, 10 bytes"


def test_a_body_without_chunked_encoding_is_left_as_it_came():
    body = b"5\r\nhello\r\n0\r\n\r\n"
    assert _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + body).body == body


def test_unchunk_stops_at_the_last_chunk_and_reads_chunks_holding_crlf():
    assert _unchunk(b"4\r\na\r\nb\r\n0\r\n\r\nignored") == b"a\r\nb"
    assert _unchunk(b"") == b""
    assert _unchunk(b"3\r\nabc\r\n") == b"abc"  # a stream cut before its last chunk keeps what came


@pytest.mark.parametrize("answer", [
    b"",
    b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n",
    b"\x16\x03\x01\x00\x2a\x02\x00",  # a TLS handshake where plain HTTP was expected
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain",  # the headers never end
    b"HTTP/1.1 OK 200\r\n\r\n",
    b"HTTP/1.1\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
])
def test_what_is_not_an_http_answer_is_a_probe_error(answer):
    with pytest.raises(ProbeError, match="not an HTTP answer"):
        _parse(answer)


def test_the_request_target_goes_on_the_wire_verbatim_and_the_answer_is_read_whole():
    received = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        def serve():
            connection, _ = server.accept()
            with connection:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += connection.recv(4096)
                received.append(data)
                connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                connection.sendall(b"2\r\nok\r\n0\r\n\r\n")
        thread = threading.Thread(target=serve)
        thread.start()
        response = request(f"http://127.0.0.1:{server.getsockname()[1]}", "/%68ealth/../x;y%00?a=1",
                           headers={"Authorization": "Basic eA=="}, timeout=10)
        thread.join(timeout=10)
    assert received[0].startswith(b"GET /%68ealth/../x;y%00?a=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Basic eA==\r\n" in received[0] and b"\r\nConnection: close\r\n" in received[0]
    assert (response.status, response.body) == (200, b"ok")


def test_a_closed_port_is_a_probe_error_naming_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ProbeError, match=f"cannot reach http://127.0.0.1:{port}"):
            request(f"http://127.0.0.1:{port}", "/", timeout=5)

"""Raw HTTP requests: the request target goes on the wire exactly as given
(percent-encodings, dot segments, `;`, even NUL), which no ordinary client
allows, so audits and tests can send the spellings an attacker would."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.message import Message
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message = field(repr=False)
    body: bytes = field(repr=False)
    certificate: bytes | None = field(default=None, repr=False)  # the server's, DER, over HTTPS


class ProbeError(Exception):
    """The server could not be reached or answered something that is not HTTP."""


def tls_context(ca_file: Path | None = None, verify: bool = True) -> ssl.SSLContext:
    """For HTTPS: the system's CAs, or those in `ca_file`; `verify=False` accepts any certificate."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def request(base_url: str, target: str | bytes, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes = b"", timeout: float = 30, tls: ssl.SSLContext | None = None,
            server_name: str | None = None) -> Response:
    """Send one request to the server of `base_url` with `target` verbatim; read the whole answer.
    Over HTTPS `tls` checks the certificate (default: the system's CAs) for `server_name`, by default
    the URL's host."""
    url = urlsplit(base_url)
    https = url.scheme == "https"
    host, port = url.hostname or "localhost", url.port or (443 if https else 80)
    raw_target = target if isinstance(target, bytes) else target.encode("latin-1")
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1"]
    all_headers = {"Host": url.netloc, "Connection": "close", "User-Agent": "rumistack-probe"}
    all_headers.update(headers or {})
    if body or method in ("POST", "PUT", "PATCH"):
        all_headers["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}".encode("latin-1") for k, v in all_headers.items()]
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    certificate = None
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = raw
            if https:
                sock = (tls or tls_context()).wrap_socket(raw, server_hostname=server_name or host)
                certificate = sock.getpeercert(binary_form=True)
            sock.sendall(data)
            answer = _read_all(sock)
    except ssl.SSLCertVerificationError as exc:
        raise ProbeError(f"the certificate of {base_url} is not trusted ({exc.verify_message}): trust its CA "
                         "(rumistack check --ca-file), or skip the check (--insecure)") from None
    except OSError as exc:
        raise ProbeError(f"cannot reach {base_url}: {exc}") from None
    return _parse(answer, certificate)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(answer: bytes, certificate: bytes | None = None) -> Response:
    head, sep, body = answer.partition(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ProbeError(f"not an HTTP answer: {answer[:80]!r}")
    headers = BytesHeaderParser().parsebytes(header_block)
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = _unchunk(body)
    return Response(int(parts[1]), headers, body, certificate)


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)

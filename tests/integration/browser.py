"""A real browser for the tests: Debian's Chromium (scripts/provision.sh installs it), driven by
playwright, which cannot download a browser of its own here.

The browser trusts a test's self-signed certificate the way a person's browser does once they
import it: through an NSS database in its HOME (~/.pki/nssdb, which Chromium on Linux reads at
start), made by certutil (libnss3-tools). The certificate is entered with the trust flags "P,,",
a trusted peer: rumistack's self-signed certificate is its own issuer but not a CA
(basicConstraints CA:FALSE), so Chromium accepts it as a trust anchor for itself only, and still
checks everything else: its names (https://localhost/ fails with ERR_CERT_COMMON_NAME_INVALID,
the certificate names 127.0.0.1 and rumi.test), its dates and its signature. Unlike
`ignore_https_errors`, no error is ignored; a browser without that database refuses the site
(ERR_CERT_AUTHORITY_INVALID), which test_browser checks.

Chromium drops every connection it has open (net::ERR_NETWORK_CHANGED) whenever a network
interface of its network namespace changes, which on a machine running Docker happens each time a
container starts or a network is made. So it runs in a network namespace of its own (unshare),
which has only its loopback: there, netns_forward.py passes connections to the test process over a
unix socket, and Chromium uses that as its HTTP proxy (CONNECT for HTTPS, so TLS still runs between
the browser and nginx; plain HTTP requests are passed on one a connection). The proxy connects only to 127.0.0.1 of this machine."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from netns_forward import pipe  # the same byte pump on both sides of the namespace

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def trusting_home(home: Path, certificate: Path) -> Path:
    """`home`, with an NSS database (~/.pki/nssdb) that trusts `certificate` (PEM) as a peer."""
    database = home / ".pki" / "nssdb"
    database.mkdir(parents=True, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{database}", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{database}", "-n", "rumistack-test", "-t", "P,,",
                    "-i", str(certificate)], check=True, capture_output=True)
    return home


PROXY_PORT = 3128  # inside the browser's network namespace


def _tunnel(client: socket.socket) -> None:
    """One connection from the browser: a CONNECT tunnel (HTTPS), or one plain HTTP request, to
    127.0.0.1:<port> (for 127.0.0.1 or localhost); 403 for any other target."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        data = client.recv(4096)
        if not data:
            client.close()
            return
        head += data
    request, _, rest = head.partition(b"\r\n\r\n")
    line, _, fields = request.partition(b"\r\n")
    method, target, version = (line.decode(errors="replace").split(" ") + ["", ""])[:3]
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
    else:  # plain http: GET http://host:port/path, passed on in origin form, one request a connection
        url = urlsplit(target)
        host, port, path = url.hostname or "", str(url.port or 80), (url.path or "/") + (f"?{url.query}" if url.query else "")
        kept = [f for f in fields.split(b"\r\n") if f and f.split(b":")[0].strip().lower()
                not in (b"connection", b"proxy-connection", b"keep-alive")]
        rest = b"\r\n".join([f"{method} {path} {version}".encode(), *kept, b"Connection: close", b"", rest])
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        client.close()
        return
    try:
        upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        upstream.settimeout(None)
    except OSError:
        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        client.close()
        return
    if method == "CONNECT":
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    if rest:
        upstream.sendall(rest)
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    pipe(upstream, client)


class _Proxy:
    """The tunnels' end in the test process: a unix socket answering CONNECT requests."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="rumistack-browser-")
        self.path = os.path.join(self.directory, "proxy.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        threading.Thread(target=self._serve, daemon=True).start()
        # the browser's executable: Chromium in a new network namespace, its loopback up, the forwarder on it
        self.executable = os.path.join(self.directory, "chromium")
        forward = Path(__file__).with_name("netns_forward.py")
        with open(self.executable, "w") as script:
            script.write(
                "#!/bin/sh\n"
                "exec unshare --net -- /bin/sh -c "
                f"'ip link set lo up && {{ \"$0\" {forward} {PROXY_PORT} {self.path} & }} && exec {CHROMIUM} \"$@\"' "
                f"{sys.executable} \"$@\"\n")
        os.chmod(self.executable, 0o755)

    def _serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=_tunnel, args=(client,), daemon=True).start()


_proxy: _Proxy | None = None


def launch(playwright, home: Path):
    """Chromium in a network namespace of its own, with `home` as its HOME (and so its NSS database)."""
    global _proxy
    _proxy = _proxy or _Proxy()
    # <-loopback>: also 127.0.0.1 goes through the proxy (Chromium would bypass it for loopback)
    proxy_args = [f"--proxy-server=http://127.0.0.1:{PROXY_PORT}", "--proxy-bypass-list=<-loopback>"]
    return playwright.chromium.launch(executable_path=_proxy.executable, args=ARGS + proxy_args,
                                      env={**os.environ, "HOME": str(home)})


def artifact_dir(root: Path, nodeid: str) -> Path:
    """test-artifacts/<the test's name, made a file name>."""
    return root / "test-artifacts" / re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")

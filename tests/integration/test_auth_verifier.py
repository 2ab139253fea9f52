"""The hop to the verifier carries the credential and nothing a client can
shape: no request body or its length (the connection to the verifier stays
open, so a length without a body would eat the next check), and none of the
verifier's own headers. Its own nginx (`containers_proxy` is per module,
and its logs can be read)."""

import re

from web import basic, send


def test_a_request_body_does_not_reach_the_verifier_or_spoil_the_next_check(containers_proxy):
    proxy = containers_proxy  # the stack whose nginx logs the tests read
    for n in range(3):
        upload = send(proxy.port, "/c/new", "POST", headers={"Authorization": basic(proxy.user, f"wrong {n}")}, body=b"x" * 64)
        assert upload.status == 401
        assert send(proxy.port, "/", headers={"Authorization": basic(proxy.user, f"also wrong {n}")}).status == 401
    answer = send(proxy.port, "/c/new", "POST", headers={"Authorization": basic(proxy.user, proxy.password)}, body=b"hello")
    assert answer.status == 200
    assert answer.seen["method"] == "POST"


def test_a_client_cannot_set_the_verifiers_own_headers(containers_proxy):
    proxy = containers_proxy  # the stack whose nginx logs the tests read
    spoofed = {"X-Rumistack-Client": "198.51.100.7", "X-Rumistack-User-File": "/etc/passwd",
               "X-Rumistack-Realm": "spoofed"}
    refused = send(proxy.port, "/", headers={**spoofed, "Authorization": basic(proxy.user, "a wrong one")})
    assert refused.status == 401 and refused.headers["WWW-Authenticate"] == f'Basic realm="{proxy.realm}"'
    assert send(proxy.port, "/", headers={**spoofed, "Authorization": basic(proxy.user, proxy.password)}).status == 200
    failures = [line for line in proxy.verifier_logs().splitlines() if "password mismatch" in line]
    assert failures and "198.51.100.7" not in failures[-1]
    assert re.search(r"client: \d+\.\d+\.\d+\.\d+$", failures[-1])

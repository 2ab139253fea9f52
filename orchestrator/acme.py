"""ACME through certbot (a container of RUMISTACK_CERTBOT_IMAGE): the command
lines and the deploy hook. Nothing here speaks the protocol; certbot does.

- The certbot container shares nginx's process namespace, so nginx's master
  is its pid 1: the deploy hook puts a new certificate where nginx reads it
  (layout.TLS_DIR) and sends it SIGHUP, a graceful reload.
- HTTP-01: certbot writes the challenge into the webroot volume, which nginx
  serves on port 80 under /.well-known/acme-challenge/.
- Its account key, certificates and renewal settings live in the acme volume
  (certbot's /etc/letsencrypt), which `down` keeps.
- The container gets the first certificate by itself (START): with none
  kept from this ACME server for the domain, or one that is due, it waits
  until nginx serves the webroot on port 80 and asks (OBTAIN); with a good
  one kept, it installs it if nginx reads another. So the compose bundle
  needs nobody to ask, and `rumistack up` asks nothing itself when it has
  just started the container: it waits for START's outcome (a line of the
  container's output, DONE; the container is healthy once it is out,
  ATTEMPTED) and reports it. Only then does `up` read the
  volumes again, or run OBTAIN by exec (a certificate due while the
  container runs). One party obtains at a time: a lock in the acme volume
  (LOCK) is held by OBTAIN, START's install and every renewal.
- The container renews by itself: every RENEW_INTERVAL seconds it runs
  `certbot renew`, which renews what is due (30 days before the end, or
  earlier when the CA says so).
"""

from __future__ import annotations

from .config import Config
from .layout import ACME_CONFIG_DIR, CERTBOT_TMPFS, PEM_FILE, TLS_DIR, WEBROOT
from .tls import RENEW_BEFORE

HOOK = "renewal-hooks/deploy/rumistack-install"  # in ACME_CONFIG_DIR; certbot runs it after each renewal
CA_BUNDLE = "rumistack-ca-bundle.pem"  # in ACME_CONFIG_DIR: RUMISTACK_ACME_CA_BUNDLE, when set
RENEW_INTERVAL = 12 * 3600
RENEW = ("certbot", "renew", "--non-interactive")

LOCK = ".rumistack-obtain.lock"  # in ACME_CONFIG_DIR: one obtain at a time

# sh -c OBTAIN sh DOMAIN SERVER EMAIL, under the lock: certonly for the domain through the
# webroot (a new certificate, although the kept one is good, when it renews from another
# ACME server), then install it for nginx. `up` runs it by exec.
OBTAIN = f"""set -e
domain=$1 server=$2 email=$3
exec 9>>{ACME_CONFIG_DIR}/{LOCK}
flock 9
# one lineage, the domain's: another (an earlier domain) would be renewed for nothing
for dir in {ACME_CONFIG_DIR}/live/*/; do
    [ -d "$dir" ] || continue
    name=$(basename "$dir")
    [ "$name" = "$domain" ] || certbot delete --non-interactive --cert-name "$name"
done
renewal={ACME_CONFIG_DIR}/renewal/$domain.conf
if [ -f "$renewal" ] && ! grep -qxF "server = $server" "$renewal"; then when=--force-renewal; else when=--keep-until-expiring; fi
if [ -n "$email" ]; then set -- --email "$email" --no-eff-email; else set -- --register-unsafely-without-email; fi
certbot certonly --non-interactive --agree-tos "$@" --server "$server" --webroot --webroot-path {WEBROOT} \\
    --cert-name "$domain" --domain "$domain" $when
RENEWED_LINEAGE={ACME_CONFIG_DIR}/live/$domain {ACME_CONFIG_DIR}/{HOOK}
"""

READY = "rumistack-ready"  # in WEBROOT's challenge directory: what START fetches to know nginx answers
STARTS = "rumistack: certbot starts"  # START's first line of output
DONE = "rumistack: first certificate:"  # then this, with one of OUTCOMES, once its attempt is over
OUTCOMES = ("kept", "obtained", "failed")
ATTEMPTED = "/tmp/rumistack-attempted"  # START made its first attempt: the container's health check
assert ATTEMPTED.rsplit("/", 1)[0] in CERTBOT_TMPFS  # a tmpfs: gone when the container starts again
HEALTHCHECK = ("CMD", "test", "-e", ATTEMPTED)
FIRST_ATTEMPT_SECONDS = 600  # how long a first attempt may take (certbot's own network timeouts are shorter)

# the certbot service's command (sh -c START sh DOMAIN SERVER EMAIL OBTAIN): see the module's
# docstring. The renewals sleep first: a certificate due now is START's to get, and `certbot renew`
# may ask the ACME server even when nothing is due (renewal information).
START = f"""domain=$1 server=$2 email=$3 obtain=$4
echo "{STARTS}"
lineage={ACME_CONFIG_DIR}/live/$domain
if [ -d "$lineage" ] && grep -qxF "server = $server" {ACME_CONFIG_DIR}/renewal/$domain.conf 2>/dev/null \\
    && python3 -c 'import datetime, sys
from cryptography import x509
leaf = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
end = getattr(leaf, "not_valid_after_utc", None) or leaf.not_valid_after.replace(tzinfo=datetime.timezone.utc)
sys.exit(end - datetime.datetime.now(datetime.timezone.utc) < datetime.timedelta(seconds=float(sys.argv[2])))' \\
        "$lineage/cert.pem" {int(RENEW_BEFORE.total_seconds())} 2>/dev/null; then
    (
        flock 9
        cat "$lineage/fullchain.pem" "$lineage/privkey.pem" | cmp -s - {TLS_DIR}/{PEM_FILE} \\
            || RENEWED_LINEAGE=$lineage {ACME_CONFIG_DIR}/{HOOK}
    ) 9>>{ACME_CONFIG_DIR}/{LOCK}
    echo "{DONE} kept"
else
    probe={WEBROOT}/.well-known/acme-challenge/{READY}
    mkdir -p "${{probe%/*}}" && echo "$HOSTNAME $$ $(date +%s)" > "$probe"
    echo "rumistack: waiting for nginx to serve the http-01 challenges"
    until python3 -c 'import sys, urllib.request
sys.exit(urllib.request.urlopen("http://nginx/.well-known/acme-challenge/{READY}", timeout=3).read() != open(sys.argv[1], "rb").read())' "$probe" 2>/dev/null
    do sleep 1; done
    rm -f "$probe"
    echo "rumistack: asking $server for a certificate for $domain"
    if sh -c "$obtain" sh "$domain" "$server" "$email"; then echo "{DONE} obtained"; else echo "{DONE} failed"; fi
fi
: > {ATTEMPTED}
while :; do sleep {RENEW_INTERVAL}; flock {ACME_CONFIG_DIR}/{LOCK} {' '.join(RENEW)}; done
"""

def install_hook(domain: str) -> bytes:
    """The deploy hook: install the domain's lineage for nginx, then reload nginx."""
    return f"""#!/bin/sh
# generated by rumistack, do not edit
# certbot runs this after it renews a certificate: nginx reads the chain and
# the key from one file, replaced by one rename, then reloads gracefully
set -eu
lineage={ACME_CONFIG_DIR}/live/{domain}
[ "${{RENEWED_LINEAGE:-$lineage}}" = "$lineage" ] || exit 0
umask 077
cat "$lineage/fullchain.pem" "$lineage/privkey.pem" > {TLS_DIR}/.{PEM_FILE}.new
mv -f {TLS_DIR}/.{PEM_FILE}.new {TLS_DIR}/{PEM_FILE}
if [ "$(cat /proc/1/comm 2>/dev/null)" = nginx ]; then
    kill -HUP 1
    echo "rumistack: installed the certificate for {domain}; nginx reloads"
else
    echo "rumistack: installed the certificate for {domain}; nginx loads it when it starts"
fi
""".encode()


def obtain_command(config: Config) -> list[str]:
    """certonly for the domain through the webroot, then install it; a new certificate even if the
    kept one is not due when it renews from another ACME server (OBTAIN decides)."""
    return ["sh", "-c", OBTAIN, "sh", config.domain, config.acme_directory, config.acme_email]


def service_command(domain: str, server: str, email: str) -> tuple[str, ...]:
    """The certbot service's command, under its entrypoint `sh -c`; the values are spec's settings
    (in the compose file, compose's interpolations of .env)."""
    return (START, "sh", domain, server, email, OBTAIN)


def environment(config: Config) -> tuple[tuple[str, str], ...]:
    """certbot trusts RUMISTACK_ACME_CA_BUNDLE (copied into its volume) for the ACME server, when set."""
    return (("REQUESTS_CA_BUNDLE", f"{ACME_CONFIG_DIR}/{CA_BUNDLE}"),) if config.acme_ca_bundle else ()


def server_of(renewal_conf: bytes) -> str | None:
    """The ACME directory a lineage renews from, as certbot's renewal file records it."""
    for line in renewal_conf.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "server":
            return value.strip()
    return None

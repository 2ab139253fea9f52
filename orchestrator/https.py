"""HTTPS for the stack, by RUMISTACK_TLS mode: the certificate from this
host (local), what nginx serves and whether to ask the ACME server
(prepare), the ACME request through certbot (obtain), and the certificate
nginx has (in_use, for `status`). Each takes the volumes it reads as an
argument (volumes.Volumes), so the same decisions hold through the Docker
engine and in the compose bundle's tools container.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from docker.models.containers import Container

from . import acme
from .config import Config
from .errors import CertificateError, StackError
from .render import TlsFacts
from .spec import ACME_VOLUME, TLS_VOLUME
from .layout import PEM_FILE, TLS_DIR
from .tls import (
    Certificate,
    kept_self_signed,
    load_files,
    placeholder,
    publicly_trusted,
    self_signed_names,
)
from .volumes import File, Volumes


@dataclass(frozen=True)
class Served:
    """What nginx serves over HTTPS after `up`, and what it takes to get there."""

    certificate: Certificate | None  # None: RUMISTACK_TLS=off
    changed: bool = False  # not what the tls volume holds: `up` writes it, a running nginx reloads
    hsts: bool = False
    nginx_version: tuple[int, int, int] | None = None
    issue: bool = False  # acme: ask the ACME server once nginx answers on port 80
    replace: bool = False  # acme: the ACME server changed, so a new certificate although the kept one is good
    #                        (certbot's OBTAIN script finds it so too, by the renewal file)
    acme_files: dict[str, File] = field(default_factory=dict)  # into the acme volume

    @property
    def facts(self) -> TlsFacts:
        """What the rendered config says about it."""
        if self.certificate is None:
            return TlsFacts()
        return TlsFacts(hashlib.sha256(self.certificate.pem()).hexdigest()[:16], self.hsts, self.nginx_version)

    def check_files(self) -> dict[str, File]:
        """The certificate where `nginx -t` looks for it."""
        return {f"{TLS_DIR}/{PEM_FILE}": File(self.certificate.pem(), mode=0o600)} if self.certificate else {}

    def volume_files(self) -> dict[str, dict[str, File]]:
        """What `up` writes into the TLS volumes: {volume: {path: File}}."""
        files: dict[str, dict[str, File]] = {}
        if self.changed and self.certificate:
            files[TLS_VOLUME] = {PEM_FILE: File(self.certificate.pem(), mode=0o600)}
        if self.acme_files:
            files[ACME_VOLUME] = self.acme_files
        return files


def local(config: Config, now: datetime) -> Certificate | None:
    """The certificate from this host, checked: the self-hoster's files, or the kept self-signed one
    (made here the first time). None in the other modes."""
    if config.tls == "files":
        return load_files(config.tls_cert_file, config.tls_key_file, config.domain, now)
    if config.tls == "self-signed":
        return kept_self_signed(config.self_signed_dir, self_signed_names(config.domain, config.bind_address), now)
    return None


def prepare(config: Config, certificate: Certificate | None, now: datetime, volumes: Volumes) -> Served:
    """Decide what nginx serves: `certificate` (see local), or in acme mode what the volumes hold."""
    if not config.https:
        return Served(None)
    version = volumes.nginx_version()
    renewal_file = f"renewal/{config.domain}.conf"
    found = volumes.read({TLS_VOLUME: (PEM_FILE,), ACME_VOLUME: (renewal_file,)})
    in_volume = found.get(TLS_VOLUME, {}).get(PEM_FILE)
    if config.tls != "acme":
        return Served(certificate, changed=in_volume != certificate.pem(),
                      hsts=publicly_trusted(certificate, config.domain, now), nginx_version=version)

    current = _parse(in_volume)
    renewal = found.get(ACME_VOLUME, {}).get(renewal_file)
    usable = current is not None and not current.placeholder and current.covers(config.domain)
    replace = usable and renewal is not None and acme.server_of(renewal) != config.acme_directory
    if usable and current.not_after > now:
        # certbot's, and still good: nginx keeps it until certbot delivers the next one
        served, changed = current, False
    else:
        served, changed = placeholder(config.domain, now), True
    return Served(served, changed=changed, hsts=publicly_trusted(served, config.domain, now), nginx_version=version,
                  issue=not usable or current.due(now) or replace, replace=replace, acme_files=_acme_files(config))


def _acme_files(config: Config) -> dict[str, File]:
    files = {acme.HOOK: File(acme.install_hook(config.domain), mode=0o755)}
    if config.acme_ca_bundle:
        try:
            files[acme.CA_BUNDLE] = File(config.acme_ca_bundle.read_bytes())
        except OSError as exc:
            raise CertificateError(f"RUMISTACK_ACME_CA_BUNDLE={config.acme_ca_bundle}: cannot read it ({exc.strerror})") from None
    return files


def _parse(pem: bytes | None) -> Certificate | None:
    try:
        return Certificate.from_pem(pem) if pem else None
    except CertificateError:
        return None  # damaged: replaced like a missing one


def obtain(config: Config, certbot: Container | None, started: bool, served: Served, volumes: Volumes, now: datetime,
           step: Callable[[str], None]) -> bool:
    """The ACME server's certificate for the domain, through certbot in its container (nginx answers
    the http-01 challenge); its deploy hook installs it and reloads nginx. A container `started` by
    this `up` gets or installs it by itself (acme.START; `up` has waited until its health check said
    the attempt is over): read its outcome, and report it. Otherwise ask,
    by exec, if `served` says so. True if nginx now has another certificate than `served`'s."""
    if certbot is None:
        return False
    if started:
        outcome, said = _first_attempt(certbot)
        if outcome == "failed":
            raise _not_issued(config, served, said)
        if outcome == "obtained":
            _check_installed(config, volumes, now, said)
            return True
        installed = in_use(config, volumes)  # kept: installed if nginx read another
        if installed is not None and installed.pem() != served.certificate.pem():
            return True
    if not served.issue:
        return False
    step(f"asking {config.acme_directory} for a certificate for {config.domain} (http-01 through nginx)")
    code, output = certbot.exec_run(acme.obtain_command(config))
    said = "\n".join(output.decode(errors="replace").strip().splitlines()[-15:])
    if code != 0:
        raise _not_issued(config, served, said)
    _check_installed(config, volumes, now, said)
    return True


def _first_attempt(certbot: Container) -> tuple[str, str]:
    """Whether the container's START has kept, obtained or failed to obtain the certificate (once its
    output says so), and what certbot said on the way."""
    started = time.monotonic()
    certbot.reload()
    # this run's output, not an earlier run's (which ended at FinishedAt; year 1 if none did): its own
    # start time comes too late, since Docker records it after the first lines may be out
    since = _epoch(certbot.attrs["State"]["FinishedAt"])
    while True:
        output = certbot.logs(since=since if since > 0 else None).decode(errors="replace")
        run = output.rsplit(acme.STARTS, 1)[1] if acme.STARTS in output else ""
        said, _, rest = run.partition(acme.DONE)
        outcome = rest.split()[0] if rest.split() else None
        if outcome in acme.OUTCOMES:
            return outcome, "\n".join(said.strip().splitlines()[-15:])
        certbot.reload()
        if certbot.status != "running":
            raise StackError(f"certbot stopped before it had a certificate; it said:\n{output.strip()[-2000:]}")
        elapsed = time.monotonic() - started
        if elapsed > acme.FIRST_ATTEMPT_SECONDS:
            raise StackError(f"certbot has no certificate after {acme.FIRST_ATTEMPT_SECONDS} s; it said:\n"
                             f"{said.strip()[-2000:]}\nsee `rumistack logs certbot -f`, then run `rumistack up` again")
        time.sleep(0.5)


def _epoch(moment: str) -> float:
    """Docker's time stamp (RFC 3339 with nanoseconds) in seconds since the epoch."""
    whole, _, fraction = moment.removesuffix("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{fraction or 0}")


def _not_issued(config: Config, served: Served, said: str) -> StackError:
    return StackError(
        f"the ACME server issued no certificate for {config.domain}, so nginx serves "
        f"{'the previous one' if not served.certificate.placeholder else 'a placeholder'}. certbot said:\n{said}\n"
        f"check that {config.domain} points to this host and that port 80 reaches RUMISTACK_HTTP_PORT="
        f"{config.http_port}, then run `rumistack up` again"
    )


def _check_installed(config: Config, volumes: Volumes, now: datetime, said: str) -> None:
    installed = in_use(config, volumes)
    if installed is None or installed.placeholder or not installed.covers(config.domain) or installed.due(now):
        raise StackError(f"certbot reported success, but the certificate nginx reads is not a current one for "
                         f"{config.domain}; certbot said:\n{said}")


def in_use(config: Config, volumes: Volumes) -> Certificate | None:
    """The certificate in the tls volume: the one nginx has loaded (None: off, or none yet)."""
    if not config.https:
        return None
    return _parse(volumes.read({TLS_VOLUME: (PEM_FILE,)}).get(TLS_VOLUME, {}).get(PEM_FILE))

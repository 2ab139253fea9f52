"""Certificates: the one nginx serves over HTTPS, by RUMISTACK_TLS mode.

- files: the self-hoster's chain and key, checked before use (the key
  belongs to the certificate, it is valid now, it names the domain);
- self-signed: made once for the domain and kept in the state directory;
- acme: issued by an ACME server through certbot (orchestrator/acme.py);
  until the first one arrives, nginx serves a placeholder made here.

nginx reads one file holding the chain and then the key, so a certificate
and its key are always replaced together, by one rename.
"""

from __future__ import annotations

import functools
import ipaddress
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

from .config import is_ip
from .errors import CertificateError, doing
from .files import make_directory, replace_atomically
SELF_SIGNED_DAYS = 825  # the longest validity Apple's platforms accept for a certificate a user trusts
RENEW_BEFORE = timedelta(days=30)  # a kept or issued certificate closer to its end than this is replaced
PLACEHOLDER = "rumistack placeholder"  # the organisation of the certificate served until ACME delivers
SELF_SIGNED_CERT, SELF_SIGNED_KEY = "self-signed.crt", "self-signed.key"


@dataclass(frozen=True)
class Certificate:
    """A certificate chain (the server's own first) and its private key."""

    chain: tuple[x509.Certificate, ...]
    key: CertificateIssuerPrivateKeyTypes

    @classmethod
    def from_pem(cls, data: bytes, source: str = "the certificate file") -> Certificate:
        """Parse a chain and a key from one PEM file (the layout nginx reads here)."""
        return cls(_chain(data, source), _key(data, source))

    def pem(self) -> bytes:
        """The chain, then the key: the file nginx reads."""
        return self.chain_pem() + self.key_pem()

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The DNS names and IP addresses the certificate is for (its subjectAltName)."""
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return ()
        return tuple(san.get_values_for_type(x509.DNSName)) + tuple(
            str(ip) for ip in san.get_values_for_type(x509.IPAddress))

    def covers(self, name: str) -> bool:
        """True if a browser accepts the certificate for `name` (exact, or a wildcard for one label)."""
        name = name.lower().rstrip(".")
        for pattern in (n.lower() for n in self.names):
            if pattern == name:
                return True
            if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
                return True
        return False

    @property
    def issuer(self) -> str:
        return self.leaf.issuer.rfc4514_string()

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    @property
    def self_signed(self) -> bool:
        return self.leaf.issuer == self.leaf.subject

    @property
    def placeholder(self) -> bool:
        return PLACEHOLDER in [a.value for a in self.leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]

    def due(self, now: datetime) -> bool:
        """Within RENEW_BEFORE of its end, or past it."""
        return self.not_after - now < RENEW_BEFORE


def _chain(data: bytes, source: str) -> tuple[x509.Certificate, ...]:
    try:
        chain = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        chain = ()
    if not chain:
        raise CertificateError(f"{source} holds no PEM certificate (a block starting -----BEGIN CERTIFICATE-----)")
    return chain


def _key(data: bytes, source: str) -> CertificateIssuerPrivateKeyTypes:
    blocks = [b for b in data.split(b"-----BEGIN ")[1:] if b.split(b"-----", 1)[0].endswith(b"PRIVATE KEY")]
    if not blocks:
        raise CertificateError(f"{source} holds no PEM private key (a block starting -----BEGIN PRIVATE KEY-----)")
    try:
        return serialization.load_pem_private_key(b"-----BEGIN " + blocks[0], password=None)
    except TypeError:
        raise CertificateError(f"the private key in {source} is protected by a passphrase, which nginx cannot ask "
                               f"for: store it unencrypted (openssl pkey -in KEY -out KEY.plain), mode 0600") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"the private key in {source} cannot be read: {exc}") from None


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{key}={path}: cannot read it ({exc.strerror})") from None


def load_files(cert_file: Path, key_file: Path, domain: str, now: datetime) -> Certificate:
    """The self-hoster's certificate chain and key, checked before use; CertificateError says what is wrong."""
    chain = _chain(_read(cert_file, "RUMISTACK_TLS_CERT_FILE"), f"RUMISTACK_TLS_CERT_FILE={cert_file}")
    key = _key(_read(key_file, "RUMISTACK_TLS_KEY_FILE"), f"RUMISTACK_TLS_KEY_FILE={key_file}")
    certificate = Certificate(chain, key)
    if _public(key) != _public(chain[0]):
        others = [n for n, c in enumerate(chain[1:], 2) if _public(c) == _public(key)]
        hint = (f"it belongs to certificate {others[0]} of the chain: put the server's own certificate first"
                if others else "they are from different pairs")
        raise CertificateError(f"the key in {key_file} does not belong to the certificate in {cert_file}: {hint}")
    leaf = chain[0]
    if leaf.not_valid_after_utc <= now:
        raise CertificateError(f"the certificate in {cert_file} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: "
                               "renew it, or let rumistack get one (RUMISTACK_TLS=acme)")
    if leaf.not_valid_before_utc > now:
        raise CertificateError(f"the certificate in {cert_file} is not valid before "
                               f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this machine's clock right?)")
    if not certificate.covers(domain):
        names = ", ".join(certificate.names) or "no name at all (no subjectAltName; browsers ignore the common name)"
        raise CertificateError(f"the certificate in {cert_file} is for {names}, not for RUMISTACK_DOMAIN={domain}")
    return certificate


def _public(item: x509.Certificate | CertificateIssuerPrivateKeyTypes) -> bytes:
    return item.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def self_signed(names: Sequence[str], now: datetime, days: int = SELF_SIGNED_DAYS,
                organization: str = "rumistack self-signed") -> Certificate:
    """A new ECDSA P-256 key and a certificate for `names` (host names or IP addresses) signed by itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    alt = [x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n) for n in names]
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Certificate((cert,), key)


def placeholder(domain: str, now: datetime) -> Certificate:
    """What nginx serves in acme mode until the first certificate is issued."""
    return self_signed([domain], now, days=30, organization=PLACEHOLDER)


def kept_self_signed(directory: Path, names: Sequence[str], now: datetime) -> Certificate:
    """The self-signed certificate kept in `directory`, made anew only when it is missing, no longer
    names everything in `names`, or nears its end. The certificate (self-signed.crt) is what a browser
    or `rumistack check --ca-file` can be told to trust; the key (self-signed.key) is private (0600)."""
    cert_file, key_file = directory / SELF_SIGNED_CERT, directory / SELF_SIGNED_KEY
    try:
        kept = Certificate(_chain(cert_file.read_bytes(), str(cert_file)), _key(key_file.read_bytes(), str(key_file)))
    except (OSError, CertificateError):
        kept = None
    if kept is not None and all(kept.covers(n) for n in names) and not kept.due(now) and _public(kept.key) == _public(kept.leaf):
        return kept
    made = self_signed(names, now)
    make_directory(directory, "the directory of the self-signed certificate")
    with doing(f"writing the self-signed certificate into {directory}"):
        replace_atomically(key_file, made.key_pem())
        replace_atomically(cert_file, made.chain_pem(), mode=0o644)
    return made


def self_signed_names(domain: str, bind_address: str) -> tuple[str, ...]:
    """The domain, and the address nginx is bound to when that is one address (the URL `up` prints uses it)."""
    if bind_address in ("0.0.0.0", "::") or bind_address == domain:
        return (domain,)
    return (domain, bind_address)


@functools.cache
def _public_roots() -> tuple[x509.Certificate, ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)  # an old root with a negative serial
        return tuple(x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes()))


def publicly_trusted(certificate: Certificate, domain: str, now: datetime,
                     roots: Sequence[x509.Certificate] | None = None) -> bool:
    """True if the chain leads to a root of Mozilla's program (certifi's bundle, or `roots`) for `domain`:
    only then can a browser be told to insist on HTTPS (HSTS) without locking anyone out."""
    if roots is None:
        roots = _public_roots()
    subject = IPAddress(ipaddress.ip_address(domain)) if is_ip(domain) else DNSName(domain)
    verifier = PolicyBuilder().store(Store(list(roots))).time(now).build_server_verifier(subject)
    try:
        verifier.verify(certificate.leaf, list(certificate.chain[1:]))
    except VerificationError:
        return False
    return True


def now() -> datetime:
    return datetime.now(timezone.utc)

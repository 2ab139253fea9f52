"""Configuration: one `.env` in the working directory, each key overridable by
an environment variable of the same name (Docker Compose's convention).

Every key, its default and its rule live in KEYS; `.env.example` documents the
same keys with the same defaults (a test keeps the two in step).
"""

from __future__ import annotations

import difflib
import io
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .errors import ConfigError, os_error
from .exemptions import Exemption, exemptions, parse_extra

# values that reach nginx.conf are checked against these: quotes, semicolons,
# braces, `$`, whitespace and control characters can never get through
_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_IMAGE = re.compile(
    r"(?:(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::[0-9]+)?/)?"  # registry
    r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # tag
    r"(?:@sha256:[a-f0-9]{64})?"  # digest
)
_REALM = re.compile(r"[A-Za-z0-9 _.,:!?()@#%&*+=/'<>^|~-]{1,64}")


def _project(value: str) -> str:
    if not _PROJECT.fullmatch(value):
        raise ValueError("use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit")
    return value


def _domain(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise ValueError("use a host name such as chat.example.com (letters, digits, '-' and dots) or an IPv4 address")
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("use a port number from 1 to 65535")
    return int(value)


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("use an IP address such as 0.0.0.0 (all interfaces) or 127.0.0.1 (this host only)") from None


def _image(value: str) -> str:
    if len(value) > 255 or not _IMAGE.fullmatch(value):
        raise ValueError("use an image reference such as nginx:1.28.0-alpine")
    return value


def _realm(value: str) -> str:
    if not _REALM.fullmatch(value):
        raise ValueError(
            "use 1-64 printable ASCII characters without quotes, backslashes, '$', ';', '{' or '}'"
        )
    return value


def _path(value: str) -> Path:
    if not value or any(ord(c) < 32 for c in value):
        raise ValueError("use a directory path")
    return Path(value)


def _seconds(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 3600:
        raise ValueError("use a whole number of seconds from 1 to 3600")
    return int(value)


def _optional_path(value: str) -> Path | None:
    return _path(value) if value else None


# how nginx gets its certificate: see orchestrator/tls.py
TLS_MODES = ("acme", "files", "self-signed", "off")


def _tls_mode(value: str) -> str:
    # as written, in lower case: the compose bundle names nginx's variant by it (compose.VARIANTS)
    if value not in TLS_MODES:
        raise ValueError(f"use one of {', '.join(TLS_MODES)}, in lower case")
    return value


def _https_url(value: str) -> str:
    url = urlsplit(value)
    if url.scheme != "https" or not url.hostname or re.search(r"[\s\"'\\]", value):
        raise ValueError("use the https URL of an ACME directory, such as https://acme-staging-v02.api.letsencrypt.org/directory")
    return value


def _optional_email(value: str) -> str:
    if value and not re.fullmatch(r"[^@\s\"'\\]+@[^@\s\"'\\]+\.[^@\s\"'\\]+", value):
        raise ValueError("use an email address such as admin@example.com, or leave it empty")
    return value


def _size(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,5}[kKmMgG]?", value):
        raise ValueError("use a size such as 25m (a number, optionally followed by k, m or g)")
    return value.lower()


def _timeout(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 86400:
        raise ValueError("use a whole number of seconds from 1 to 86400")
    return int(value)


def _mongo_uri(value: str) -> str:
    if value and not re.fullmatch(r"mongodb(\+srv)?://\S+", value):
        raise ValueError("use a MongoDB connection string such as mongodb://user:pass@db.example.com:27017/RumiTalk")
    return value


def _cidrs(value: str) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_network(part.strip(), strict=False)) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError("use addresses or networks separated by commas, such as 172.16.0.0/12,192.168.1.10") from None


def _optional_url(value: str) -> str:
    url = urlsplit(value)
    if value and (url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/")
                  or url.query or re.search(r"[\s\"'\\$;{}]", value)):
        raise ValueError("use the URL browsers open, such as https://chat.example.com, or leave it empty")
    return value.rstrip("/")


def _replicas(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise ValueError("use a whole number from 1 to 64")
    return int(value)


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


@dataclass(frozen=True)
class Key:
    """A setting: its name in .env and the environment, its default, and the rule its value must meet."""

    name: str
    default: str
    parse: Callable[[str], object]
    field: str = ""  # the Config attribute that holds the parsed value


def _key(name: str, default: str, parse: Callable[[str], object]):
    """A Config field read from the key `name`."""
    return field(metadata={"key": Key(name, default, parse)})


@dataclass(frozen=True)
class Config:
    """The parsed settings: one field per key, declared here only (KEYS is read off these fields)."""

    project: str = _key("RUMISTACK_PROJECT", "rumistack", _project)
    domain: str = _key("RUMISTACK_DOMAIN", "localhost", _domain)
    http_port: int = _key("RUMISTACK_HTTP_PORT", "8080", _port)
    bind_address: str = _key("RUMISTACK_BIND_ADDRESS", "0.0.0.0", _address)
    nginx_image: str = _key("RUMISTACK_NGINX_IMAGE", "nginx:1.28.0-alpine", _image)
    rumitalk_image: str = _key("RUMITALK_IMAGE", "ghcr.io/rumitalk/rumitalk:v0.8.0", _image)
    mongo_image: str = _key("RUMISTACK_MONGO_IMAGE", "mongo:8.0.4", _image)
    mongo_uri: str = _key("RUMISTACK_MONGO_URI", "", _mongo_uri)
    search: bool = _key("RUMISTACK_SEARCH", "false", _flag)
    meili_image: str = _key("RUMISTACK_MEILI_IMAGE", "getmeili/meilisearch:v1.12.3", _image)
    realm: str = _key("RUMISTACK_REALM", "RumiTalk", _realm)
    state_dir: Path = _key("RUMISTACK_STATE_DIR", ".rumistack", _path)
    health_timeout: int = _key("RUMISTACK_HEALTH_TIMEOUT", "120", _seconds)
    lock_timeout: int = _key("RUMISTACK_LOCK_TIMEOUT", "300", _seconds)
    auth_cache_seconds: int = _key("RUMISTACK_AUTH_CACHE_SECONDS", "300", _seconds)
    strict_api: bool = _key("RUMISTACK_STRICT_API", "false", _flag)
    token_cache_seconds: int = _key("RUMISTACK_TOKEN_CACHE_SECONDS", "30", _seconds)
    stream_timeout: int = _key("RUMISTACK_STREAM_TIMEOUT", "900", _timeout)
    max_upload: str = _key("RUMISTACK_MAX_UPLOAD", "25m", _size)
    log_max_size: str = _key("RUMISTACK_LOG_MAX_SIZE", "10m", _size)
    exempt_oauth: bool = _key("RUMISTACK_EXEMPT_OAUTH", "false", _flag)
    exempt_paths: tuple[Exemption, ...] = _key("RUMISTACK_EXEMPT_PATHS", "", parse_extra)
    tls: str = _key("RUMISTACK_TLS", "self-signed", _tls_mode)
    https_port: int = _key("RUMISTACK_HTTPS_PORT", "8443", _port)
    tls_cert_file: Path | None = _key("RUMISTACK_TLS_CERT_FILE", "", _optional_path)
    tls_key_file: Path | None = _key("RUMISTACK_TLS_KEY_FILE", "", _optional_path)
    acme_directory: str = _key("RUMISTACK_ACME_DIRECTORY", "https://acme-v02.api.letsencrypt.org/directory", _https_url)
    acme_email: str = _key("RUMISTACK_ACME_EMAIL", "", _optional_email)
    acme_ca_bundle: Path | None = _key("RUMISTACK_ACME_CA_BUNDLE", "", _optional_path)
    certbot_image: str = _key("RUMISTACK_CERTBOT_IMAGE", "certbot/certbot:v5.7.0", _image)
    tools_base_image: str = _key("RUMISTACK_TOOLS_BASE_IMAGE", "python:3.12-slim-bookworm", _image)
    rumitalk_env_file: Path = _key("RUMITALK_ENV_FILE", "rumitalk.env", _path)
    rumitalk_config_file: Path = _key("RUMITALK_CONFIG_FILE", "rumitalk.yaml", _path)
    trusted_proxies: tuple[str, ...] = _key("RUMISTACK_TRUSTED_PROXIES", "", _cidrs)
    public_url: str = _key("RUMISTACK_PUBLIC_URL", "", _optional_url)
    rumitalk_replicas: int = _key("RUMISTACK_RUMITALK_REPLICAS", "2", _replicas)
    redis_image: str = _key("RUMISTACK_REDIS_IMAGE", "redis:7.4.2", _image)

    @property
    def exemptions(self) -> tuple[Exemption, ...]:
        return exemptions(self.exempt_oauth, self.exempt_paths, self.strict_api)

    @property
    def https(self) -> bool:
        return self.tls != "off"

    @property
    def loopback_only(self) -> bool:
        """Bound to this machine only: nothing sent to it crosses a network."""
        return ipaddress.ip_address(self.bind_address).is_loopback

    @property
    def url(self) -> str:
        host = self.domain if self.bind_address in ("0.0.0.0", "::") else self.bind_address
        if ":" in host:
            host = f"[{host}]"
        scheme, port, default = ("https", self.https_port, 443) if self.https else ("http", self.http_port, 80)
        return f"{scheme}://{host}/" if port == default else f"{scheme}://{host}:{port}/"

    @property
    def browser_url(self) -> str:
        """The URL browsers use: RUMISTACK_PUBLIC_URL behind another proxy, else nginx's own."""
        return self.public_url + "/" if self.public_url else self.url

    @property
    def drops_secure_cookies(self) -> bool:
        """Browsers reach RumiTalk over plain HTTP at a name that is not loopback: they drop its Secure login
        cookies (a browser treats only loopback as a secure context without HTTPS)."""
        url = urlsplit(self.browser_url)
        host = url.hostname or ""
        return url.scheme == "http" and host != "localhost" and not (is_ip(host) and ipaddress.ip_address(host).is_loopback)

    @property
    def users_file(self) -> Path:
        return self.state_dir / "htpasswd"

    @property
    def self_signed_dir(self) -> Path:
        """Where RUMISTACK_TLS=self-signed keeps its certificate (self-signed.crt) and key."""
        return self.state_dir / "tls"


# every key, in the order of Config's fields
KEYS: tuple[Key, ...] = tuple(replace(f.metadata["key"], field=f.name) for f in fields(Config))


def load_config(env_file: Path | str = ".env", environ: Mapping[str, str] | None = None) -> Config:
    """Read `env_file` (if it exists), let `environ` override it, check every value."""
    environ = os.environ if environ is None else environ
    env_file = Path(env_file)
    from_file = read_env_file(env_file)
    _refuse_unknown(env_file, from_file)
    values: dict[str, object] = {}
    raws: dict[str, str] = {}
    for key in KEYS:
        raw = environ.get(key.name, from_file.get(key.name))
        raw = raws[key.name] = key.default if raw is None or raw == "" else raw
        try:
            values[key.field] = key.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{key.name}={raw!r} is not valid: {exc} (set it in .env or the environment)") from None
    config = Config(**values)  # type: ignore[arg-type]
    try:
        config.exemptions
    except ValueError as exc:
        raise ConfigError(f"RUMISTACK_EXEMPT_PATHS={raws['RUMISTACK_EXEMPT_PATHS']!r} is not valid: {exc}; "
                          "list each path once") from None
    _check_tls(config)
    return config


def _refuse_unknown(env_file: Path, from_file: Mapping[str, str | None]) -> None:
    """A misspelt key would be ignored silently: refused, with the closest known one."""
    known = [key.name for key in KEYS]
    for name in from_file:
        if name.startswith("RUMISTACK_") and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the keys"
            raise ConfigError(f"{env_file}: {name} is not a rumistack setting: {hint}")


def read_env_file(env_file: Path, interpolate: bool = True, what: str = "the configuration file") -> dict[str, str | None]:
    """The keys of the dotenv file `env_file` ({} if there is none), with ${...} expanded if `interpolate`;
    one line that names the file (as `what`) when it cannot be read."""
    try:
        data = env_file.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise os_error(f"reading {what} {env_file}", exc) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{what} {env_file} is not UTF-8 text: line {line} has the byte "
                          f"0x{data[exc.start]:02x}; save it as UTF-8") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise ConfigError(f"{what} {env_file} has a NUL character on line {line}: remove it")
    return dotenv_values(stream=io.StringIO(text), interpolate=interpolate)


def _check_tls(config: Config) -> None:
    """The TLS keys that only make sense together."""
    if config.tls == "files" and not (config.tls_cert_file and config.tls_key_file):
        raise ConfigError("RUMISTACK_TLS=files needs RUMISTACK_TLS_CERT_FILE (the certificate chain) and "
                          "RUMISTACK_TLS_KEY_FILE (its private key), both PEM files on this host")
    if config.tls == "acme" and (config.domain == "localhost" or "." not in config.domain or is_ip(config.domain)):
        raise ConfigError(f"RUMISTACK_TLS=acme needs a public domain name in RUMISTACK_DOMAIN (not {config.domain!r}): "
                          "an ACME server checks it over the internet; for a LAN use RUMISTACK_TLS=self-signed")
    if config.https and config.http_port == config.https_port:
        raise ConfigError(f"RUMISTACK_HTTP_PORT and RUMISTACK_HTTPS_PORT are both {config.http_port}: choose two ports")


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True

"""RumiTalk's own settings, as a self-hoster brings them from an existing
install: the settings file (RUMITALK_ENV_FILE, a dotenv file of the
variables RumiTalk's docs describe) and its YAML config (RUMITALK_CONFIG_FILE:
custom endpoints, interface settings). Both are optional.

Both are checked before anything changes: a variable the stack sets itself
is refused with the rumistack key that controls it, a RUMISTACK_* key is
refused (it belongs in .env), and the YAML must parse as a mapping. What
they turn on is named (`providers`), never a key's value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from .config import Config, read_env_file
from .errors import ConfigError
from .secretstore import GENERATORS

# RumiTalk's variables the stack sets itself, each with what controls it
DERIVED: dict[str, str] = {
    "HOST": "the stack (nginx reaches RumiTalk on its own network)",
    "PORT": "the stack (nginx reaches RumiTalk on port 3080)",
    "MONGO_URI": "RUMISTACK_MONGO_URI",
    "DOMAIN_CLIENT": "RUMISTACK_PUBLIC_URL (or RUMISTACK_DOMAIN and the ports)",
    "DOMAIN_SERVER": "RUMISTACK_PUBLIC_URL (or RUMISTACK_DOMAIN and the ports)",
    "SEARCH": "RUMISTACK_SEARCH",
    "MEILI_HOST": "RUMISTACK_SEARCH",
    "CONFIG_PATH": "RUMITALK_CONFIG_FILE",
    "TRUST_PROXY": "RUMISTACK_TRUSTED_PROXIES",
    "USE_REDIS": "the swarm stack (its Redis service)",
    "REDIS_URI": "the swarm stack (its Redis service)",
}

# an endpoint is on when its variable is set; `user_provided` lets each user enter a key
_PROVIDERS = (
    ("openAI", ("OPENAI_API_KEY",)),
    ("anthropic", ("ANTHROPIC_API_KEY",)),
    ("google", ("GOOGLE_KEY",)),
    ("azureOpenAI", ("AZURE_API_KEY",)),
    ("assistants", ("ASSISTANTS_API_KEY",)),
    ("bedrock", ("BEDROCK_AWS_SECRET_ACCESS_KEY", "BEDROCK_AWS_DEFAULT_REGION")),
)
USER_PROVIDED = "user_provided"


@dataclass(frozen=True)
class Provider:
    name: str
    user_provided: bool = False  # each user brings a key
    custom: bool = False  # from the YAML's endpoints.custom

    def describe(self) -> str:
        name = f"custom: {self.name}" if self.custom else self.name
        return f"{name} (each user brings a key)" if self.user_provided else name


@dataclass(frozen=True)
class AppSettings:
    """The checked settings file and YAML (empty when a file does not exist)."""

    variables: tuple[tuple[str, str], ...] = ()  # from the settings file, in its order
    config_yaml: bytes | None = None  # the YAML file's content, as RumiTalk reads it
    custom_endpoints: tuple[dict, ...] = ()

    @property
    def secrets(self) -> dict[str, str]:
        """RumiTalk's secrets the file brings along (moving an install in): they take the place of generated ones."""
        return {name: value for name, value in self.variables if name in GENERATORS}

    @property
    def environment(self) -> dict[str, str]:
        """What RumiTalk gets from the file; its secrets come through the secret store, with the same values."""
        return {name: value for name, value in self.variables if name not in GENERATORS}

    @property
    def config_name(self) -> str | None:
        """The YAML's file name in its volume: named by its content, so a new content is a new CONFIG_PATH
        and RumiTalk is recreated with it."""
        if self.config_yaml is None:
            return None
        return f"librechat-{hashlib.sha256(self.config_yaml).hexdigest()[:16]}.yaml"

    def providers(self) -> tuple[Provider, ...]:
        """The AI providers RumiTalk will offer, as its endpoint names; ENDPOINTS filters them, as in RumiTalk."""
        variables = dict(self.variables)
        found = []
        for name, keys in _PROVIDERS:
            values = [variables[k] for k in keys if variables.get(k)]
            if values:
                found.append(Provider(name, user_provided=values[0] == USER_PROVIDED))
        for endpoint in self.custom_endpoints:
            found.append(Provider(str(endpoint.get("name")), user_provided=endpoint.get("apiKey") == USER_PROVIDED,
                                  custom=True))
        listed = [e.strip() for e in variables.get("ENDPOINTS", "").split(",") if e.strip()]
        if listed:
            found = [p for p in found if p.custom or p.name in listed]
        return tuple(found)


def load_app_settings(config: Config) -> AppSettings:
    """Read and check the settings file and the YAML named in `config`; ConfigError names the file, the
    line or variable, and what to do."""
    variables = _variables(config.rumitalk_env_file)
    config_yaml, custom = _yaml(config.rumitalk_config_file)
    return AppSettings(variables, config_yaml, custom)


def _variables(path: Path) -> tuple[tuple[str, str], ...]:
    # no ${...} expansion: RumiTalk's dotenv takes every value as it is written
    values = read_env_file(path, interpolate=False, what="RumiTalk's settings file")
    for name in values:
        if name.startswith("RUMISTACK_"):
            raise ConfigError(f"{path}: {name} is a rumistack setting: move it to .env (this file holds "
                              "RumiTalk's own variables)")
        if name in DERIVED:
            raise ConfigError(f"{path}: {name} is set by rumistack, from {DERIVED[name]}: remove it from this file")
    return tuple((name, value or "") for name, value in values.items())


def _yaml(path: Path) -> tuple[bytes | None, tuple[dict, ...]]:
    if not path.is_file():
        return None, ()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read RumiTalk's config file {path} ({exc.strerror}): check its permissions") from None
    try:
        document = yaml.safe_load(data)
    except yaml.MarkedYAMLError as exc:
        # the problem and where it is; never the line itself, which may hold a key
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(f"{path}, {where}: not valid YAML ({exc.problem or exc.context}): fix it, then run the "
                          "command again; nothing was changed") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}); nothing was changed") from None
    if document is None:
        return data, ()
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: RumiTalk's config must be a mapping (keys such as version, endpoints, "
                          f"interface), not a {type(document).__name__}")
    endpoints = document.get("endpoints") or {}
    custom = endpoints.get("custom") if isinstance(endpoints, dict) else None
    if custom is not None and not (isinstance(custom, list) and all(isinstance(e, dict) and e.get("name") for e in custom)):
        raise ConfigError(f"{path}: endpoints.custom must be a list of endpoints, each with a name, apiKey, "
                          "baseURL and models")
    return data, tuple(custom or ())

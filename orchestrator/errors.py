"""Named errors: the CLI turns each into one line and an exit code."""


class RumistackError(Exception):
    """An error a self-hoster can act on; its message says what to do."""

    exit_code = 1


class ConfigError(RumistackError):
    """A configuration value is invalid."""

    exit_code = 2


class UserError(RumistackError):
    """A user name, password or the user file is not usable."""

    exit_code = 2


class DockerUnavailable(RumistackError):
    """The Docker engine cannot be reached."""

    exit_code = 3


class StackError(RumistackError):
    """Creating, starting or checking the stack failed."""

    exit_code = 4


class CertificateError(RumistackError):
    """A certificate or key cannot be used: unreadable, mismatched, expired, or for another name."""

    exit_code = 2

"""https.obtain, without Docker: a certbot container that `up` has just started
gets the certificate by itself (acme.START), and `up` waits for that run's
outcome instead of asking too; a container already running is asked by exec
only when the certificate must be renewed. The container is a stand-in whose
output grows as START's would."""

import pytest
from certs import NOW, make_ca
from recording import RecordingVolumes

from rumistack import acme
from rumistack.config import load_config
from rumistack.errors import StackError
from rumistack.https import Served, obtain
from rumistack.layout import PEM_FILE
from rumistack.spec import TLS_VOLUME
from rumistack.tls import placeholder

DOMAIN = "chat.example.com"
NEVER_STOPPED = "0001-01-01T00:00:00Z"  # Docker's FinishedAt of a container that never stopped


class Certbot:
    """A certbot container: its output after each look (the last one stays), and the commands run in it."""

    def __init__(self, *outputs: str, finished: str = NEVER_STOPPED, status: str = "running") -> None:
        self.outputs, self.status, self.execs, self.since = list(outputs), status, [], []
        self.attrs = {"State": {"FinishedAt": finished}}

    def reload(self) -> None:
        pass

    def logs(self, since=None) -> bytes:
        self.since.append(since)
        return (self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]).encode()

    def exec_run(self, command):
        self.execs.append(command)
        return 0, b"ok"


@pytest.fixture(scope="module")
def ca():
    return make_ca("an ACME server's CA")


def _config():
    return load_config("/nonexistent", environ={"RUMISTACK_TLS": "acme", "RUMISTACK_DOMAIN": DOMAIN})


def _obtain(certbot, started, served, installed):
    volumes = RecordingVolumes(contents={TLS_VOLUME: {PEM_FILE: installed.pem()}})
    return obtain(_config(), certbot, started, served, volumes, NOW, lambda message: None)


def test_a_started_container_is_waited_for_and_never_asked_again(ca, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    issued = ca.issue([DOMAIN])
    certbot = Certbot("", f"{acme.STARTS}\nrumistack: waiting for nginx\n",
                      f"{acme.STARTS}\nSuccessfully received certificate.\n{acme.DONE} obtained\n")
    served = Served(placeholder(DOMAIN, NOW), issue=True)
    assert _obtain(certbot, True, served, issued) is True  # `up` runs once more with the certificate
    assert certbot.execs == []  # START asked; `up` did not


def test_a_failed_first_attempt_is_one_error_with_certbots_words():
    certbot = Certbot(f"{acme.STARTS}\nCertbot failed to authenticate some domains\n{acme.DONE} failed\n")
    served = Served(placeholder(DOMAIN, NOW), issue=True)
    with pytest.raises(StackError, match="issued no certificate for chat.example.com, so nginx serves a placeholder"
                                         r"(.|\n)*failed to authenticate(.|\n)*check that chat.example.com points"):
        _obtain(certbot, True, served, placeholder(DOMAIN, NOW))
    assert certbot.execs == []


def test_only_this_runs_outcome_counts_not_an_earlier_runs(ca, monkeypatch):
    """A stopped container that `up` starts again: its earlier output is before FinishedAt, and the last
    START's marker begins this run."""
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    issued = ca.issue([DOMAIN])
    certbot = Certbot(f"{acme.STARTS}\n{acme.DONE} failed\n{acme.STARTS}\n",
                      f"{acme.STARTS}\n{acme.DONE} failed\n{acme.STARTS}\n{acme.DONE} kept\n",
                      finished="2026-12-01T10:00:00.5Z")
    served = Served(issued)
    assert _obtain(certbot, True, served, issued) is False  # kept, and nginx already has it
    assert certbot.since[0] == pytest.approx(1796119200.5)


def test_a_kept_certificate_installed_for_nginx_means_one_more_round(ca):
    issued = ca.issue([DOMAIN])
    certbot = Certbot(f"{acme.STARTS}\n{acme.DONE} kept\n")
    assert _obtain(certbot, True, Served(placeholder(DOMAIN, NOW), issue=True), issued) is True
    assert certbot.execs == []


def test_a_running_container_is_asked_by_exec_only_when_a_renewal_is_due(ca):
    issued = ca.issue([DOMAIN])
    certbot = Certbot(f"{acme.STARTS}\n{acme.DONE} kept\n")
    assert _obtain(certbot, False, Served(issued), issued) is False
    assert certbot.execs == []
    assert _obtain(certbot, False, Served(issued, issue=True), issued) is True
    assert certbot.execs == [acme.obtain_command(_config())]


def test_a_certbot_that_stops_before_its_outcome_is_an_error(ca):
    certbot = Certbot(f"{acme.STARTS}\nTraceback: no module named certbot\n", status="exited")
    with pytest.raises(StackError, match="certbot stopped before it had a certificate(.|\n)*no module named certbot"):
        _obtain(certbot, True, Served(placeholder(DOMAIN, NOW), issue=True), placeholder(DOMAIN, NOW))

"""The `rumistack` command: each command loads the config, calls one library
function, and turns named errors into one line and an exit code; so does
any other failure (the disk's, the engine's, a bug's): one line saying what
rumistack was doing, the OS's or the engine's words, and what to do.
--debug (RUMISTACK_DEBUG=1) adds the traceback.

Commands that change the stack hold the project lock (lock.py) and first
remove what a killed command left."""

from __future__ import annotations

import json
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import docker.errors
import requests.exceptions
import urllib3.exceptions
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, TaskID, TextColumn
from rich.progress import Progress as Bars

from . import backup as backups
from . import check as checks
from . import lock, stack, tls
from .appsettings import AppSettings, load_app_settings
from .compose import render_bundle, up_command
from .config import Config, load_config
from .errors import ConfigError, DockerUnavailable, RumistackError, StackError, Unexpected, os_error
from .exemptions import STRICT_OPEN, summary
from .mounted import VOLUMES_DIR_ENV, MountedVolumes
from .probe import tls_context
from .progress import Progress
from .publish import push_users
from .pull import reason
from .tls import SELF_SIGNED_CERT, Certificate
from .swarm import deploy_command, render_swarm
from .swarm import status as swarm_status
from .swarm import summary as swarm_summary
from .swarm import update as swarm_update
from .users import UserFile, WeakPassword
from .volumes import EngineVolumes, Volumes

_err = Console(stderr=True, highlight=False)

# what each command is doing, for the one line of an error
_DOING = {
    "adduser": "adding a user", "passwd": "changing a password", "deluser": "removing a user",
    "users": "listing the users", "up": "bringing the stack up", "down": "taking the stack down",
    "render": "writing the compose bundle's files", "reload": "reloading nginx",
    "status": "reading the stack's status", "logs": "reading the logs", "check": "auditing the deployment",
    "backup": "writing a backup", "restore": "restoring a backup",
}
_last_step: list[str] = []  # the latest progress step, a finer "doing"


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException, EOFError):
            raise  # click's own: it prints them
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            if ctx.params.get("debug"):
                traceback.print_exception(exc, file=sys.stderr)
            try:
                named = _named(exc, _doing(ctx.invoked_subcommand))
            except Exception:  # noqa: BLE001 - an exception whose words cannot even be read
                named = Unexpected(f"an unexpected {exc.__class__.__name__} while {_doing(ctx.invoked_subcommand)}: "
                                   "a bug in rumistack; run it again with --debug and report the traceback")
            click.echo(f"error: {named}", err=True)
            ctx.exit(named.exit_code)


def _doing(command: str | None) -> str:
    doing = _DOING.get(command or "", f"running rumistack {command}" if command else "starting rumistack")
    return f"{doing} ({_last_step[-1]})" if _last_step else doing


def _one_line(text: object) -> str:
    return " ".join(str(text).split()).rstrip(".")


def _named(exc: Exception, doing: str) -> RumistackError:
    """`exc` as a named error whose message is one sentence: what was being done, the words of the OS or
    the engine, what to do."""
    if isinstance(exc, RumistackError):
        return exc
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        urllib3.exceptions.HTTPError)):
        return DockerUnavailable(
            f"lost the Docker engine while {doing}: {_one_line(exc)}; check that it runs (`docker info`), "
            "then run the command again, which goes on from where this one stopped")
    if isinstance(exc, docker.errors.ImageNotFound):
        return StackError(f"an image went away while {doing} ({_one_line(reason(exc))}): someone removed it; "
                          "run the command again, which finds or pulls it anew")
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 409 and "already in use" in reason(exc):
        return StackError(f"a name rumistack needs is taken while {doing}: {_one_line(reason(exc))}; that "
                          "container is not part of this project: remove it (`docker rm -f NAME`) or choose "
                          "another RUMISTACK_PROJECT")
    if isinstance(exc, docker.errors.NotFound):
        return StackError(f"something rumistack uses went away while {doing} ({_one_line(reason(exc))}): "
                          "another program removed it; run the command again")
    if isinstance(exc, docker.errors.APIError):
        return StackError(f"the Docker engine refused a request while {doing}: {_one_line(reason(exc))}; "
                          "fix what it names, then run the command again")
    if isinstance(exc, docker.errors.DockerException):
        return DockerUnavailable(f"the Docker engine cannot be used while {doing}: {_one_line(exc)}; check "
                                 "DOCKER_HOST and that the engine runs (`docker info`)")
    if isinstance(exc, OSError):
        return os_error(doing, exc)
    if isinstance(exc, UnicodeError):
        return ConfigError(f"text that is not UTF-8 while {doing} ({_one_line(exc)}): save the file or value "
                           "as UTF-8")
    return Unexpected(f"an unexpected {exc.__class__.__name__} while {doing} ({_one_line(exc)[:300]}): "
                      "a bug in rumistack; run it again with --debug (or RUMISTACK_DEBUG=1) and report the "
                      "traceback")


class _ConsoleProgress(Progress):
    """On a terminal: a progress bar per layer while pulling, and one live
    line while waiting for health. Elsewhere (CI, pipes): plain lines, one
    per change of state."""

    def __init__(self) -> None:
        self._status = None
        self._last: str | None = None
        self._bars: Bars | None = None
        self._tasks: dict[str, TaskID] = {}
        self._layer_states: dict[str, str] = {}

    def step(self, message: str) -> None:
        _last_step[:] = [message]
        self._stop()
        click.echo(f"- {message}", err=True)

    def layer(self, image: str, layer: str, status: str, current: int | None, total: int | None) -> None:
        if not _err.is_terminal:
            if self._layer_states.get(layer) != status and not status.startswith(("Downloading", "Extracting")):
                click.echo(f"  {layer}: {status}", err=True)
            self._layer_states[layer] = status
            return
        if self._bars is None:
            self._bars = Bars(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=_err)
            self._bars.start()
        if layer not in self._tasks:
            self._tasks[layer] = self._bars.add_task(layer, total=None)
        task = self._tasks[layer]
        if current is not None:
            self._bars.update(task, description=f"{layer} {status}", completed=current, total=total)
        else:  # a change of state; "... complete" fills the bar
            done = self._bars.tasks[task].total if "complete" in status.lower() else None
            self._bars.update(task, description=f"{layer} {status}", completed=done)

    def transfer(self, name: str, done: int) -> None:
        """On a terminal, a live line with the bytes so far; elsewhere the step lines give each part's size."""
        if not _err.is_terminal:
            return
        if self._bars is None:
            self._bars = Bars(TextColumn("{task.description}"), DownloadColumn(), console=_err)
            self._bars.start()
        if name not in self._tasks:
            self._tasks[name] = self._bars.add_task(name, total=None)
        self._bars.update(self._tasks[name], completed=done)

    def waiting(self, states: dict[str, str], elapsed: float) -> None:
        pending = ", ".join(f"{name} ({state})" for name, state in states.items() if state != "healthy")
        if not pending:
            self._stop()
            click.echo(f"- all healthy after {elapsed:.0f} s", err=True)
            return
        text = f"waiting for {pending}"
        if _err.is_terminal:
            if self._status is None:
                self._status = _err.status("")
                self._status.start()
            self._status.update(f"{text}: {elapsed:.0f} s")
        elif text != self._last:
            click.echo(f"- {text}", err=True)
        self._last = text

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._bars is not None:
            self._bars.stop()
            self._bars, self._tasks = None, {}

    def __del__(self) -> None:
        self._stop()


@dataclass(frozen=True)
class _Options:
    env_file: Path
    volumes_dir: Path | None


_HELP = f"""RumiTalk behind nginx with HTTP Basic Auth.

    Basic Auth guards everything except {summary()}, each for
    its reason; in strict API mode (RUMISTACK_STRICT_API) /api/ needs Basic
    credentials or a token RumiTalk confirms, except {summary(STRICT_OPEN)}.

    \b
    Typical use:
      rumistack adduser alice
      rumistack up
      rumistack status
    """


@click.group(cls=_Group, help=_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=".env", show_default=True,
              help="The configuration file; environment variables of the same names override it.")
@click.option("--volumes-dir", type=click.Path(file_okay=False, path_type=Path), envvar=VOLUMES_DIR_ENV,
              help="The stack's volumes are mounted at DIR/<volume> (the compose bundle's rumistack service): "
                   "write there, without a Docker engine.")
@click.option("--debug", is_flag=True, envvar="RUMISTACK_DEBUG",
              help="Show the traceback of a failure (for a bug report). Also RUMISTACK_DEBUG=1.")
@click.version_option(package_name="rumistack")
@click.pass_context
def cli(ctx: click.Context, env_file: Path, volumes_dir: Path | None, debug: bool) -> None:
    _last_step.clear()
    ctx.obj = _Options(env_file, volumes_dir)


def _options() -> _Options:
    return click.get_current_context().obj


_password_stdin = click.option("--password-stdin", is_flag=True,
                               help="Read the password from the first line of standard input.")


def _config() -> Config:
    return load_config(_options().env_file)


def _volumes(config: Config, progress: Progress) -> Volumes:
    """The stack's volumes: mounted here (the compose tools container), or through the Docker engine."""
    volumes_dir = _options().volumes_dir
    if volumes_dir is not None:
        return MountedVolumes(volumes_dir)
    return stack.engine_volumes(config, progress)


@contextmanager
def _changing(config: Config, command: str) -> Iterator[None]:
    """Hold the project lock (waiting for another holder, saying whom for), then remove what a killed
    command left: temporary files in the state directory, helper containers and staged files in the
    volumes (when the engine answers: else the command itself says so)."""
    with lock.hold(config.state_dir, config.project, command, config.lock_timeout,
                   notice=lambda line: click.echo(line, err=True)):
        volumes_dir = _options().volumes_dir
        if volumes_dir is not None:
            MountedVolumes(volumes_dir).sweep()
        else:
            try:
                client = stack.connect()
            except DockerUnavailable:
                client = None
            if client is not None:
                EngineVolumes(client, config, _ConsoleProgress()).sweep()
        yield


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password", err=True)


def _apply_users(config: Config, users: UserFile) -> None:
    """Copy the changed user file into a running stack's volume, or roll it out to the swarm's stack."""
    with _changing(config, click.get_current_context().info_name):
        try:
            volumes = _volumes(config, Progress())
            pushed = push_users(users, volumes)
            rolled = not pushed and _options().volumes_dir is None and swarm_update(
                config, users, volumes, stack.connect(), step=_ConsoleProgress().step)
        except DockerUnavailable:
            pushed = rolled = False
    if pushed:
        click.echo("applied to the running stack")
    if rolled:
        click.echo("rolled out to the swarm: every nginx task has the new users")


def _set_password(users: UserFile, name: str, password: str, change) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", WeakPassword)
        change(name, password)
    for warning in caught:
        click.echo(f"warning: {warning.message}; a longer one is much harder to guess", err=True)


@cli.command()
@click.argument("name")
@_password_stdin
def adduser(name: str, password_stdin: bool) -> None:
    """Add a Basic Auth user (asks for the password twice, without echo)."""
    config = _config()
    users = UserFile(config.users_file)
    _set_password(users, name, _read_password(password_stdin), users.add)
    click.echo(f"added user {name}")
    _apply_users(config, users)


@cli.command()
@click.argument("name")
@_password_stdin
def passwd(name: str, password_stdin: bool) -> None:
    """Change a user's password."""
    config = _config()
    users = UserFile(config.users_file)
    _set_password(users, name, _read_password(password_stdin), users.set_password)
    click.echo(f"changed the password of {name}")
    _apply_users(config, users)


@cli.command()
@click.argument("name")
def deluser(name: str) -> None:
    """Remove a user."""
    config = _config()
    users = UserFile(config.users_file)
    users.delete(name)
    click.echo(f"removed user {name}")
    _apply_users(config, users)


@cli.command("users")
def list_users() -> None:
    """List the user names."""
    for name in UserFile(_config().users_file).names():
        click.echo(name)


@cli.command()
@click.option("--yes", "-y", is_flag=True,
              help="Start over plain HTTP (RUMISTACK_TLS=off) on a network address without asking.")
@click.option("--no-backup", is_flag=True,
              help="Do not write a backup before a new MongoDB or Meilisearch image replaces the running one.")
def up(yes: bool, no_backup: bool) -> None:
    """Render the config, write it and the users into volumes, start nginx and
    RumiTalk, and wait until both are healthy. Changes only what changed.
    Before a new MongoDB or Meilisearch image is used, writes a backup into
    <state dir>/backups (unless --no-backup)."""
    config = _config()
    app = load_app_settings(config)
    if not config.https:
        _confirm_plain_http(config, yes)
    _warn_plain_http_cookies(config)
    with _changing(config, "up"):
        progress = _ConsoleProgress()
        url = stack.up(config, UserFile(config.users_file), app, progress,
                       upgrading=None if no_backup else backups.before_upgrade(config, progress))
    click.echo(f"RumiTalk is up at {url}")
    click.echo(_providers_line(app))
    if not app.providers():
        click.echo(f"warning: no AI provider is configured, so the chat will not answer: add a key such as "
                   f"OPENAI_API_KEY=... to {config.rumitalk_env_file} (or a custom endpoint to "
                   f"{config.rumitalk_config_file}), then run `rumistack up` again", err=True)


def _providers_line(app: AppSettings) -> str:
    names = [p.describe() for p in app.providers()]
    return f"ai providers: {', '.join(names) if names else 'none'}"


def _warn_plain_http_cookies(config: Config) -> None:
    if config.drops_secure_cookies:
        click.echo(f"warning: browsers open {config.browser_url} over plain HTTP, so they drop RumiTalk's Secure "
                   "login cookies and users are logged out on every reload: use HTTPS (RUMISTACK_TLS), or set "
                   "RUMISTACK_PUBLIC_URL=https://... when a proxy in front terminates TLS", err=True)


def _warn_plain_http(config: Config) -> bool:
    """Say that HTTPS is off, and whether passwords then leave this machine: True if they do."""
    if config.loopback_only:
        click.echo(f"note: HTTPS is off (RUMISTACK_TLS=off); bound to {config.bind_address}, "
                   "so passwords never leave this machine", err=True)
        return False
    click.echo(f"warning: HTTPS is off (RUMISTACK_TLS=off) and nginx listens on {config.bind_address}: Basic Auth "
               "passwords, and the chats, cross the network readable by anyone on the path. Use "
               "RUMISTACK_TLS=self-signed, acme or files, or RUMISTACK_BIND_ADDRESS=127.0.0.1.", err=True)
    return True


def _confirm_plain_http(config: Config, yes: bool) -> None:
    if _warn_plain_http(config) and not yes:
        click.confirm("Start without HTTPS anyway?", abort=True, err=True)


@cli.command()
@click.option("--volumes", "remove_volumes", is_flag=True,
              help="Also remove the volumes: RumiTalk's database, uploads and search index. Asks first.")
@click.option("--yes", is_flag=True, help="Do not ask before removing volumes.")
def down(remove_volumes: bool, yes: bool) -> None:
    """Remove the containers and the network; keep the volumes (RumiTalk's data) and the users."""
    config = _config()
    if remove_volumes and not yes:
        click.confirm(f"Remove every volume of {config.project}, with RumiTalk's conversations and uploads?",
                      abort=True, err=True)
    with _changing(config, "down"):
        count = stack.down(config, remove_volumes, _ConsoleProgress())
    kept = "users are kept" if remove_volumes else "volumes and users are kept"
    click.echo(f"removed {count} container(s); {kept}" if count else f"nothing was running; {kept}")


def _engine_only(command: str) -> None:
    if _options().volumes_dir is not None:
        raise ConfigError(f"`{command}` reaches the volumes and MongoDB through the Docker engine, so it does not "
                          "run in the compose bundle's tools container: run `rumistack "
                          f"{command}` on the host, with the same .env")


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--search-index", is_flag=True,
              help="Also save Meilisearch's index (left out by default: RumiTalk rebuilds it from MongoDB).")
def backup(path: Path | None, search_index: bool) -> None:
    """Write one archive (mode 0600) of everything a restore needs: the state
    directory (users, secrets, certificates), RumiTalk's settings file and
    YAML, a MongoDB dump, and RumiTalk's uploads and images. Runs while the
    stack serves. PATH defaults to <state dir>/backups/<project>-<time>.tar."""
    config = _config()
    _engine_only("backup")
    with _changing(config, "backup"):
        written = backups.backup(config, path, search_index, _ConsoleProgress())
    for note in written.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"backup of {config.project} written to {written.path} ({len(written.members)} parts, "
               f"{written.path.stat().st_size} bytes)")


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True,
              help="Replace data that is there already (state files that differ, volumes that hold data).")
def restore(path: Path, force: bool) -> None:
    """Bring a backup back into this project, the stack being down: into a new
    directory or project, or this one after `rumistack down --volumes`.
    Checks every checksum first: a damaged archive changes nothing. Then run
    `rumistack up`."""
    config = _config()
    _engine_only("restore")
    with _changing(config, "restore"):
        restored = backups.restore(config, path, force, _ConsoleProgress())
    for what in restored.replaced:
        click.echo(f"replaced {what}")
    for note in restored.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"restored {len(restored.members)} part(s) of {path} into project {config.project}: start it "
               "with `rumistack up`")


@cli.command()
@click.option("--swarm", "for_swarm", is_flag=True,
              help="Write a Docker Swarm stack file and its configs and secrets instead (docs/swarm.md).")
def render(for_swarm: bool) -> None:
    """Write what `docker compose -f compose/docker-compose.yml up` needs: the
    nginx config (checked with nginx -t), the certificate and the users into
    the volumes, and each service's environment into the state directory.
    After a change, a running nginx takes it on a reload (SIGHUP).

    With --swarm: the stack file for `docker stack deploy` and the files of
    its configs and secrets, under the state directory's swarm/."""
    config = _config()
    if for_swarm:
        with _changing(config, "render"):
            rendered = render_swarm(config, UserFile(config.users_file), _volumes(config, _ConsoleProgress()),
                                    load_app_settings(config))
        for line in swarm_summary(rendered):
            click.echo(line)
        click.echo(f"wrote {rendered.path}; deploy it with: {deploy_command(config)}")
        return
    with _changing(config, "render"):
        needed = render_bundle(config, UserFile(config.users_file), _volumes(config, _ConsoleProgress()),
                               load_app_settings(config))
    click.echo(f"wrote the nginx configuration, {'the certificate, ' if config.https else ''}the users and the "
               f"services' environment for {config.project}")
    # compose starts what render prepared without asking: render says what `up` would ask about
    if not config.https:
        _warn_plain_http(config)
    _warn_plain_http_cookies(config)
    if needed:
        click.echo(f"this configuration needs compose's profile {', '.join(needed)}: put COMPOSE_PROFILES="
                   f"{','.join(needed)} into .env, or start it with: {up_command(config)}")


@cli.command()
def reload() -> None:
    """Render the nginx config again, check it, and apply it by a graceful reload."""
    config = _config()
    progress = _ConsoleProgress()
    with _changing(config, "reload"):
        if swarm_update(config, UserFile(config.users_file), _volumes(config, progress), stack.connect(),
                        load_app_settings(config), progress.step):
            click.echo("rolled out to the swarm: every service has the new config")
            return
        stack.reload(config, progress)
    click.echo("nginx reloaded")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
def status(as_json: bool) -> None:
    """Show the containers, their health, the URL, the number of users, and the certificate.
    On a swarm (DOCKER_HOST a manager running the stack): each service's tasks, their nodes and health."""
    config = _config()
    try:
        replicas, tasks = swarm_status(stack.connect(), config)
    except DockerUnavailable:
        replicas, tasks = {}, []  # stack.status says so, as on one host
    if replicas:
        return _swarm_status(config, replicas, tasks, as_json)
    services = stack.status(config)
    users = len(UserFile(config.users_file).names())
    certificate = stack.certificate(config) if config.https else None
    app = load_app_settings(config)
    auth = stack.auth_minutes(config) if services else None
    if as_json:
        providers = [{"name": p.name, "custom": p.custom, "user_provided": p.user_provided} for p in app.providers()]
        click.echo(json.dumps({"url": config.url, "users": users, "services": [s.as_dict() for s in services],
                               "https": _https_json(config, certificate), "ai_providers": providers,
                               "auth_minutes": auth}))
        return
    for s in services:
        click.echo(f"{s.service:<12} {s.container:<30} {s.state:<10} {s.health}")
    if not services:
        click.echo("not running (start it with `rumistack up`)")
    click.echo(f"url: {config.url}")
    if config.public_url:
        click.echo(f"browsers open: {config.browser_url}")
    click.echo(f"users: {users}")
    click.echo(_providers_line(app))
    for line in _https_lines(config, certificate):
        click.echo(line)
    click.echo(_auth_line(auth))


def _auth_line(minutes: list[dict[str, int]] | None) -> str:
    if minutes is None:
        return "auth: the verifier is not running, so only credentials verified before get in"
    total = {key: sum(m.get(key, 0) for m in minutes) for key in (
        "verifications", "successes", "failures_wrong_password", "failures_unknown_user", "throttled",
        "cache_hit", "cache_miss")}
    return (f"auth, last {len(minutes)} minutes: {total['verifications']} verified ({total['successes']} ok, "
            f"{total['failures_wrong_password']} wrong password, {total['failures_unknown_user']} unknown user), "
            f"{total['throttled']} throttled, cache {total['cache_hit']} hits, {total['cache_miss']} misses")


def _swarm_status(config: Config, replicas: dict[str, str], tasks: list, as_json: bool) -> None:
    """The stack on a swarm: each service's running and wanted tasks, and each task's node and health."""
    users = len(UserFile(config.users_file).names())
    if as_json:
        click.echo(json.dumps({"swarm": True, "users": users, "replicas": replicas,
                               "tasks": [t.as_dict() for t in tasks]}))
        return
    for service, count in replicas.items():
        click.echo(f"{service:<12} {count}")
        for task in (t for t in tasks if t.service == service):
            click.echo(f"  {task.node:<20} {task.state:<10} {task.health}")
    click.echo(f"users: {users}")


def _https_lines(config: Config, certificate: Certificate | None) -> list[str]:
    if not config.https:
        where = ("bound to this machine only" if config.loopback_only
                 else "Basic Auth passwords cross the network readable")
        return [f"https: off ({where})"]
    if certificate is None:
        return [f"https: {config.tls}, no certificate yet (run `rumistack up`)"]
    days = (certificate.not_after - tls.now()).days
    lines = [f"https: {config.tls}",
             f"certificate: for {', '.join(certificate.names)}, issued by {certificate.issuer}, "
             f"expires {certificate.not_after:%Y-%m-%d} ({'in ' + str(days) + ' days' if days >= 0 else 'EXPIRED'})"]
    if certificate.placeholder:
        lines.append("  a placeholder until the ACME server issues one: `rumistack up` asks again")
    elif certificate.self_signed:
        lines.append(f"  self-signed: browsers will warn until you trust {config.self_signed_dir / SELF_SIGNED_CERT}"
                     " on each device")
    return lines


def _https_json(config: Config, certificate: Certificate | None) -> dict:
    if certificate is None:
        return {"mode": config.tls, "certificate": None}
    return {"mode": config.tls, "certificate": {
        "names": list(certificate.names), "issuer": certificate.issuer, "expires": certificate.not_after.isoformat(),
        "self_signed": certificate.self_signed, "placeholder": certificate.placeholder}}


@cli.command()
@click.argument("service", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until interrupted.")
@click.option("-n", "--tail", default=100, show_default=True, help="How many recent lines of each container.")
def logs(service: str | None, follow: bool, tail: int) -> None:
    """Show the containers' logs, each line prefixed by its service."""
    try:
        for name, line in stack.logs(_config(), service, follow, tail):
            click.echo(f"{name:<12}| {line}")
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("url", required=False)
@click.option("--user", prompt="Basic Auth user", help="A user of the deployment, for the credential checks.")
@_password_stdin
@click.option("--strict", is_flag=True, help="Expect strict API mode: /api/ needs credentials too.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trust this CA (PEM) for HTTPS, e.g. a self-signed certificate. Default: the system's; for this "
                   "deployment with RUMISTACK_TLS=self-signed, its certificate.")
@click.option("--insecure", is_flag=True, help="Do not verify the HTTPS certificate at all.")
def check(url: str | None, user: str, password_stdin: bool, strict: bool, ca_file: Path | None, insecure: bool) -> None:
    """Audit a running deployment from outside (default: this one's URL).

    Sends real requests for every path class (protected, exempt, near
    misses, odd spellings of exempt paths) and credential form, prints what
    was expected and what came back, and exits with 1 on any failure.
    Works against any Basic Auth proxy in front of RumiTalk.
    """
    if url is None:
        config = _config()
        url = config.url
        kept = config.self_signed_dir / SELF_SIGNED_CERT
        if ca_file is None and config.tls == "self-signed" and kept.is_file():
            ca_file = kept
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else click.prompt(
        "Password", hide_input=True, err=True)
    results = checks.audit(url, user, password, strict=strict, tls=tls_context(ca_file, verify=not insecure))
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        expect = r.case.expect
        target = f"{r.case.method} {r.case.target}" if r.case.method != "GET" else r.case.target
        click.echo(f"{mark} {r.case.group:<11} {target:<36} {r.case.credentials:<9} "
                   f"expected {expect:<30} got {r.observed}{'  ' + r.note if r.note else ''}")
    open_routes = [r.case.target for r in results if r.note == "answers without credentials"]
    if open_routes:
        click.echo(f"{len(open_routes)} /api/ routes answer without credentials: {', '.join(open_routes)} "
                   "(strict API mode closes them)")
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results)} checks against {url}: {failed} failed")
    if failed:
        raise SystemExit(1)


def _terminated(signum: int, frame) -> None:
    """SIGTERM ends rumistack as Ctrl-C would: cleanup blocks run (temporary files, helper containers)."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    cli(prog_name="rumistack")

"""``up``: the whole platform on one machine, in the foreground, until Ctrl-C or SIGTERM.

Redis is the configured ``MEETINGTASKS_REDIS_URL`` or, without one, an embedded redis-server with AOF in
the data directory on a free port, whose URL is recorded in ``<data_dir>/redis.url`` so that every other
command run from the same directory finds it. Then one worker per service, beat, the bridge, the gateway,
Flower, the exporter and the console, each in its own process group with its log in ``<data_dir>/logs/``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from types import FrameType

import click
import redis

from meetingtasks.cli.main import fail
from meetingtasks.core.errors import ConfigurationError, MeetingTasksError
from meetingtasks.core.redaction import redact_url
from meetingtasks.core.registry import REGISTRY, import_modules, services
from meetingtasks.core.settings import CONSOLE_AUTH_FILE, REDIS_URL_FILE, Settings, load_settings
from meetingtasks.operations.embedded import RedisServer
from meetingtasks.operations.embedded_sentinel import MASTER_NAME, SentinelGroup
from meetingtasks.operations.supervisor import PartFailed, PartSpec, Supervisor, http_ok, log_contains
from meetingtasks.store.connections import new_client

FLOWER_AUTH_FILE = "flower.auth"
DEFAULT_CONCURRENCY = 2


class StopRequested(BaseException):
    """Raised by the signal handler while parts are still starting, to abandon the start cleanly."""


def worker_services(modules: Iterable[str]) -> list[str]:
    """The services with task types once ``modules`` (the includes) are imported: yours get workers too. A module
    that cannot be imported is skipped here; the parts that import it fail to start, naming it."""
    for module in modules:
        with contextlib.suppress(ConfigurationError):
            import_modules([module])
    return [svc for svc in services() if REGISTRY.for_service(svc)]


def part_specs(settings: Settings, concurrency: int, includes: Iterable[str] = ()) -> list[PartSpec]:
    """Every part ``up`` runs, with how to tell it is ready and where it answers."""
    s = settings
    specs = [
        PartSpec(f"worker-{svc}", ["meetingtasks", "worker", svc, "--concurrency", str(concurrency)],
                 log_contains(" ready."))
        for svc in worker_services([*s.include, *includes])
    ]
    gateway = f"http://{s.gateway_host}:{s.gateway_port}"
    flower = f"http://{s.flower_host}:{s.flower_port}"
    exporter = f"http://{s.exporter_host}:{s.exporter_port}"
    console = f"http://{s.console_host}:{s.console_port}"
    specs += [
        PartSpec("beat", ["meetingtasks", "beat"], log_contains("delayed-set pump running")),
        PartSpec("bridge", ["meetingtasks", "bridge"], log_contains("bridge ready")),
        PartSpec("gateway", ["meetingtasks", "gateway", "--host", s.gateway_host, "--port", str(s.gateway_port)],
                 http_ok(f"{gateway}/healthz"), urls=[f"{gateway}/", f"ws://{s.gateway_host}:{s.gateway_port}/ws"],
                 ports=[(s.gateway_host, s.gateway_port, "MEETINGTASKS_GATEWAY_PORT")]),
        PartSpec("flower", ["celery", "-A", "meetingtasks.operations.flower", "flower", f"--address={s.flower_host}",
                            f"--port={s.flower_port}"],
                 http_ok(f"{flower}/healthcheck"), urls=[f"{flower}/"],
                 ports=[(s.flower_host, s.flower_port, "MEETINGTASKS_FLOWER_PORT")]),
        PartSpec("exporter", ["meetingtasks", "exporter", "--host", s.exporter_host, "--port", str(s.exporter_port)],
                 http_ok(f"{exporter}/metrics"), urls=[f"{exporter}/metrics"],
                 ports=[(s.exporter_host, s.exporter_port, "MEETINGTASKS_EXPORTER_PORT")]),
        PartSpec("console", ["meetingtasks", "console", "--host", s.console_host, "--port", str(s.console_port)],
                 http_ok(f"{console}/healthz"), urls=[f"{console}/"],
                 ports=[(s.console_host, s.console_port, "MEETINGTASKS_CONSOLE_PORT")]),
    ]
    return specs


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text + "\n")


def flower_auth(settings: Settings) -> str:
    """The configured Flower users, else ``admin:<random>`` kept in the data directory across runs."""
    if settings.flower_basic_auth is not None and settings.flower_basic_auth.get_secret_value():
        return settings.flower_basic_auth.get_secret_value()
    return recorded_auth(settings.data_dir / FLOWER_AUTH_FILE)


def console_auth(settings: Settings) -> str:
    """The configured console user, else ``admin:<random>`` in the data directory's console.auth (which the
    console reads by itself when no MEETINGTASKS_CONSOLE_BASIC_AUTH is set)."""
    if settings.console_basic_auth is not None and settings.console_basic_auth.get_secret_value():
        return settings.console_basic_auth.get_secret_value()
    return recorded_auth(settings.data_dir / CONSOLE_AUTH_FILE)


def recorded_auth(path: Path) -> str:
    """``user:password`` recorded in ``path``, created (owner-only) with a random password the first time."""
    try:
        recorded = path.read_text(encoding="utf-8").strip()
    except OSError:
        recorded = ""
    if not recorded:
        recorded = f"admin:{secrets.token_urlsafe(12)}"
        write_private(path, recorded)
    return recorded


class Redis:
    """The configured Redis (checked reachable) or an embedded one recorded in the data directory."""

    def __init__(self, settings: Settings, *, ha: bool = False) -> None:
        self.settings = settings
        self.ha = ha
        self.server: RedisServer | None = None
        self.group: SentinelGroup | None = None
        self.url = settings.redis_url or ""
        self.note = "configured (MEETINGTASKS_REDIS_URL)"

    def start(self) -> None:
        if self.settings.redis_url:
            client = new_client(self.settings.redis_url, self.settings, socket_connect_timeout=3, socket_timeout=3)
            try:
                client.ping()
            except redis.RedisError as exc:
                raise PartFailed(f"redis: cannot reach MEETINGTASKS_REDIS_URL ({exc})") from None
            finally:
                client.close()
            return
        directory = self.settings.data_dir / "redis"
        if self.ha:
            self.group = SentinelGroup(self.settings.data_dir / "redis-ha")  # assigned first, as below
            self.group.start()
            self.url = self.group.url
            self.note = "embedded Sentinel group: a primary, a replica, three sentinels"
        else:
            self.server = RedisServer(directory)  # assigned first: a signal during start() still stops it
            self.server.start()
            self.url = self.server.url
            self.note = f"embedded, AOF in {directory}"
        write_private(self.settings.data_dir / REDIS_URL_FILE, self.url)

    def failover_hint(self) -> str | None:
        """How to try a failover on the embedded Sentinel group (``up --ha``), or ``None``."""
        group = self.group
        if group is None:
            return None
        primary = group.primary_port()
        node = group.node(primary) if primary else None
        pid = node.process.pid if node is not None and node.process is not None else "?"
        return (f"try a failover: `kill -9 {pid}` (the primary, port {primary}) or "
                f"`redis-cli -p {group.sentinels[0].port} SENTINEL FAILOVER {MASTER_NAME}`; every part follows it "
                "(docs/high-availability.md)")

    def stop(self) -> None:
        if self.group is not None:
            self.group.stop()
            self.group = None
            (self.settings.data_dir / REDIS_URL_FILE).unlink(missing_ok=True)
        if self.server is not None:
            self.server.stop()
            self.server = None
            (self.settings.data_dir / REDIS_URL_FILE).unlink(missing_ok=True)


def part_env(settings: Settings, redis_url: str, gateway_secret: str, flower_users: str,
             includes: tuple[str, ...]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MEETINGTASKS_REDIS_URL=redis_url,
        MEETINGTASKS_DATA_DIR=str(settings.data_dir),
        MEETINGTASKS_GATEWAY_SECRET=gateway_secret,
        MEETINGTASKS_FLOWER_BASIC_AUTH=flower_users,
    )
    if includes:
        env["MEETINGTASKS_INCLUDE"] = ",".join([*settings.include, *includes])
    return env


@click.command()
@click.option("--include", "-I", "includes", multiple=True,
              help="Module with the services' own task types and subscriptions, for every part; repeatable.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where Redis data, secrets and logs go [default: MEETINGTASKS_DATA_DIR, ./.meetingtasks].")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help=f"Pool size of each worker [default: MEETINGTASKS_WORKER_CONCURRENCY or {DEFAULT_CONCURRENCY}].")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds every part has to become ready.")
@click.option("--ha", is_flag=True, help="Embedded Redis as a Sentinel group (a primary, a replica, three "
              "sentinels) to try a failover locally; ignored with MEETINGTASKS_REDIS_URL.")
def up(includes: tuple[str, ...], data_dir: Path | None, concurrency: int | None, ready_timeout: float,
       ha: bool) -> None:
    """Run the whole platform locally: Redis, a worker per service, beat, bridge, gateway, Flower, exporter,
    console."""
    from meetingtasks.cli.gateway import make_secret
    from meetingtasks.core.logs import configure_logging
    from meetingtasks.core.secret_fields import generate_keys_file

    try:
        overrides = {"data_dir": data_dir} if data_dir is not None else {}
        settings = load_settings(**overrides)
        settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    except MeetingTasksError as exc:
        fail(str(exc))
        return
    configure_logging(settings, component="up")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    specs = part_specs(settings, concurrency or settings.worker_concurrency or DEFAULT_CONCURRENCY, includes)
    store = Redis(settings, ha=ha)
    stopping = threading.Event()
    starting = True

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if starting:
            raise StopRequested()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor: Supervisor | None = None
    try:
        Supervisor(specs, {}, settings.data_dir / "logs").check_ports()  # before anything runs
        store.start()
        secret = make_secret(settings)
        created = generate_keys_file(settings)  # the key sealing secret task fields, read by every part
        if created is not None:
            click.echo(f"generated an encryption key in {created}", err=True)
        users = flower_auth(settings)
        console_user = console_auth(settings).split(":", 1)[0]  # the console reads it from the data directory
        env = part_env(settings, store.url, secret, users, includes)
        supervisor = Supervisor(specs, env, settings.data_dir / "logs", echo=click.echo,
                                ready_timeout_s=ready_timeout)
        show_plan(settings, store, specs, users, console_user)
        supervisor.start()
        starting = False
        click.echo(f"all {len(specs) + 1} parts ready; `meetingtasks demo` or `meetingtasks dispatch ...` from "
                   f"this directory use them; Ctrl-C stops everything")
        hint = store.failover_hint()
        if hint:
            click.echo(hint)
        while not stopping.wait(0.5):
            supervisor.watch()
    except StopRequested:
        pass
    except (PartFailed, MeetingTasksError) as exc:
        click.echo(f"error: {exc}; stopping everything", err=True)
        raise SystemExit(1) from None
    finally:
        # Stopping takes a few seconds; a second Ctrl-C must not cut it short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        click.echo("stopping ...", err=True)
        if supervisor is not None:
            supervisor.stop()
        store.stop()
        click.echo("stopped", err=True)


def show_plan(settings: Settings, store: Redis, specs: list[PartSpec], flower_users: str,
              console_user: str = "admin") -> None:
    click.echo(f"meetingtasks up: data in {settings.data_dir}, logs in {settings.data_dir / 'logs'}")
    click.echo(f"  redis             {redact_url(store.url)}  ({store.note})")
    for spec in specs:
        extra = ""
        if spec.name == "flower":
            # The password stays out of the terminal (and of any log capturing it): it is in the data directory.
            user = flower_users.split(",")[0].split(":", 1)[0]
            where = ("MEETINGTASKS_FLOWER_BASIC_AUTH" if settings.flower_basic_auth is not None
                     else settings.data_dir / FLOWER_AUTH_FILE)
            extra = f"  (basic auth: user {user}, password in {where})"
        elif spec.name == "console":
            where = ("MEETINGTASKS_CONSOLE_BASIC_AUTH" if settings.console_basic_auth is not None
                     else settings.data_dir / CONSOLE_AUTH_FILE)
            extra = f"  (basic auth: user {console_user}, password in {where})"
        elif spec.name == "gateway":
            extra = "  (tokens: meetingtasks token CLIENT_ID)"
        click.echo(f"  {spec.name:<17} {'  '.join(spec.urls) or 'running'}{extra}")


def register(group: click.Group) -> None:
    group.add_command(up)

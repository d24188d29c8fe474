"""``console [--host H] [--port P]``: the operator console (see docs/console.md)."""

from __future__ import annotations

import ipaddress
import socket

import click

from meetingtasks.cli.main import fail
from meetingtasks.core.errors import ConfigurationError, MeetingTasksError
from meetingtasks.core.settings import load_settings


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an interface only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, bound before the server starts so that a taken port is one error line
    (as for `meetingtasks exporter`), not uvicorn's log lines and exit 3."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigurationError(f"console: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                                 "choose another with --host or MEETINGTASKS_CONSOLE_HOST") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse a port in TIME_WAIT
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"console: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                                 "choose another with --port or MEETINGTASKS_CONSOLE_PORT") from None
    return sock


@click.command()
@click.option("--host", help="Interface to listen on [default: console_host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [default: console_port, 5556].")
@click.option("--include", "-I", "includes", multiple=True, help="Module with the service's own task types.")
def console(host: str | None, port: int | None, includes: tuple[str, ...]) -> None:
    """Run the operator console: dead letters, scheduled tasks, task lookup, events, workers, charts."""
    import uvicorn

    from meetingtasks.console import console_credentials, create_console_app
    from meetingtasks.core.logs import configure_logging
    from meetingtasks.core.registry import import_modules, load_builtin_types
    from meetingtasks.store.platform import configure

    try:
        settings = load_settings()
        credentials = console_credentials(settings)
        bind_host = host or settings.console_host
        bind_port = settings.console_port if port is None else port
        if credentials is None and not is_loopback(bind_host):
            # Open on an interface other machines reach, anyone there could purge the dead letters.
            raise ConfigurationError(
                f"console: MEETINGTASKS_CONSOLE_ALLOW_NO_AUTH applies only on a loopback interface (127.0.0.1, "
                f"::1, localhost), not {bind_host}: set MEETINGTASKS_CONSOLE_BASIC_AUTH=user:password to listen there")
        load_builtin_types()
        import_modules([*settings.include, *includes])
        configure_logging(settings, component="console")
        app = create_console_app(configure(settings), credentials)
        sock = listen(bind_host, bind_port)
    except MeetingTasksError as exc:
        fail(str(exc))
        return
    bound_port = sock.getsockname()[1]
    how = "without auth (console_allow_no_auth)" if credentials is None else f"basic auth, user {credentials[0]}"
    click.echo(f"console: http://{bind_host}:{bound_port}/ ({how})", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=2))
    server.run(sockets=[sock])


def register(group: click.Group) -> None:
    group.add_command(console)

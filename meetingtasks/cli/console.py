"""``console [--host H] [--port P]``: the operator console (see docs/console.md)."""

from __future__ import annotations

import click

from meetingtasks.cli.main import fail
from meetingtasks.errors import MeetingTasksError
from meetingtasks.settings import load_settings


@click.command()
@click.option("--host", help="Interface to listen on [default: console_host, 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), help="Port [default: console_port, 5556].")
@click.option("--include", "-I", "includes", multiple=True, help="Module with the service's own task types.")
def console(host: str | None, port: int | None, includes: tuple[str, ...]) -> None:
    """Run the operator console: dead letters, scheduled tasks, task lookup, events, workers, charts."""
    import uvicorn

    from meetingtasks.console import console_credentials, create_console_app
    from meetingtasks.logs import configure_logging
    from meetingtasks.platform import configure
    from meetingtasks.registry import import_modules, load_builtin_types

    try:
        settings = load_settings()
        credentials = console_credentials(settings)
        load_builtin_types()
        import_modules([*settings.include, *includes])
        configure_logging(settings, component="console")
        app = create_console_app(configure(settings), credentials)
    except MeetingTasksError as exc:
        fail(str(exc))
        return
    bind_host = host or settings.console_host
    bind_port = settings.console_port if port is None else port
    how = "without auth (console_allow_no_auth)" if credentials is None else f"basic auth, user {credentials[0]}"
    click.echo(f"console: http://{bind_host}:{bind_port}/ ({how})", err=True)
    uvicorn.run(app, host=bind_host, port=bind_port, log_config=None, access_log=False,
                timeout_graceful_shutdown=2)


def register(group: click.Group) -> None:
    group.add_command(console)

"""The console's ASGI application: routes, basic auth around everything, static files from the package."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from meetingtasks.console import tools
from meetingtasks.console.actions import Actions
from meetingtasks.console.audit import AuditLog
from meetingtasks.console.auth import BasicAuthMiddleware, Guard
from meetingtasks.console.context import Console
from meetingtasks.console.headers import SecurityHeadersMiddleware
from meetingtasks.console.live import Live
from meetingtasks.console.pages import Pages
from meetingtasks.core.errors import BrokerUnavailable, InfrastructureError, MeetingTasksError, TaskNotFound
from meetingtasks.store.platform import Platform

STATIC = Path(__file__).parent / "static"


def flower_url(platform: Platform) -> str:
    s = platform.settings
    return s.console_flower_url or f"http://{s.flower_host}:{s.flower_port}/"


def create_console_app(platform: Platform, credentials: tuple[str, str] | None) -> Starlette:
    """The console for ``platform``; ``credentials`` ``(user, password)``, or ``None`` to run it open (see
    :func:`meetingtasks.console.auth.console_credentials`)."""
    console = Console(platform, Guard(credentials), AuditLog(platform), flower_url(platform))
    pages, actions = Pages(console), Actions(console)
    live = Live(console, pages)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def bad_input(request: Request, exc: Exception) -> Response:
        # A filter or page number that does not parse: one line, the page is otherwise fine.
        return console.render(request, "error.html", page="", error=str(exc), status_code=400)

    async def refused(request: Request, exc: Exception) -> Response:
        # The platform's own errors are one line each, whichever page or action meets them: never a bare 500.
        status = (404 if isinstance(exc, TaskNotFound)
                  else 503 if isinstance(exc, BrokerUnavailable | InfrastructureError) else 400)
        return console.render(request, "error.html", page="", error=str(exc), status_code=status)

    routes = [
        Route("/", pages.overview),
        Route("/api/series", pages.series),
        Route("/api/stats", pages.stats_json),
        Route("/dead-letters", pages.dead_letters),
        Route("/dead-letters/replay", actions.replay, methods=["POST"]),
        Route("/dead-letters/purge", actions.purge, methods=["POST"]),
        Route("/dead-letters/{service}/{id}", pages.dead_letter),
        Route("/scheduled", pages.scheduled),
        Route("/scheduled/cancel", actions.cancel, methods=["POST"]),
        Route("/scheduled/run-now", actions.run_now, methods=["POST"]),
        Route("/task", pages.task),
        Route("/task/cancel", actions.cancel, methods=["POST"]),
        Route("/events", pages.events),
        Route("/workers", pages.workers),
        Route("/audit", pages.audit),
        Route("/live/overview", live.overview),
        Route("/live/task", live.task),
        Route("/live/events", live.events),
        Route("/live/workers", live.workers),
        *tools.Tools(console, actions, live).routes(),  # the tools' pages: tools.py
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    # The security headers outermost: the auth middleware's 401 carries them too.
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeadersMiddleware),
                                                Middleware(BasicAuthMiddleware, guard=console.guard)],
                     exception_handlers={ValueError: bad_input, MeetingTasksError: refused})

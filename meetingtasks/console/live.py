"""Live updates without reloading: server-sent events carrying re-rendered parts of a page.

A page names its stream in ``<body data-live="/live/...">``; ``console.js`` opens an ``EventSource`` on it and
puts each ``html`` event's fragment into the element it names. The stream re-reads Redis every
:data:`INTERVAL_S` (in a thread: the reads are blocking) and sends a fragment only when it changed, so an idle
console costs one small read per open page every interval. The overview's stream also sends ``series`` every
:data:`SERIES_EVERY_S`, on which the page fetches the chart data again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from html import escape

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from meetingtasks.console.context import Console
from meetingtasks.console.pages import Pages
from meetingtasks.core.errors import MeetingTasksError, TaskNotFound

#: Seconds between two reads of a live part.
INTERVAL_S = 1.0
#: Seconds between two ``series`` events (the rollup gets a new point every few seconds at most).
SERIES_EVERY_S = 10.0


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class Live:
    def __init__(self, console: Console, pages: Pages) -> None:
        self.c = console
        self.pages = pages

    def _stream(self, request: Request, target: str, render: Callable[[], str], series: bool = False) -> Response:
        async def events() -> AsyncIterator[str]:
            last = None
            series_at = time.monotonic()
            yield ": connected\n\n"  # the browser's EventSource is open from here
            while not await request.is_disconnected():
                try:
                    html = await run_in_threadpool(render)
                except MeetingTasksError as exc:
                    # Gone while watched (a task's status expired, ...): say so in its place, one line, and end.
                    yield sse("html", {"target": target, "html": f'<p class="error">{escape(str(exc))}</p>'})
                    return
                if html != last:
                    last = html
                    yield sse("html", {"target": target, "html": html})
                if series and time.monotonic() - series_at >= SERIES_EVERY_S:
                    series_at = time.monotonic()
                    yield sse("series", {})
                await asyncio.sleep(INTERVAL_S)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def overview(self, request: Request) -> Response:
        return self._stream(request, "overview-rows",
                            lambda: self.c.fragment("_overview_rows.html", **self.pages.overview_rows()), series=True)

    async def task(self, request: Request) -> Response:
        task_id = request.query_params.get("id") or ""
        try:
            await run_in_threadpool(self.pages.task_view, task_id)
        except MeetingTasksError as exc:
            return PlainTextResponse(str(exc), status_code=404 if isinstance(exc, TaskNotFound) else 400)
        return self._stream(request, "task-live",
                            lambda: self.c.fragment("_task_live.html", view=self.pages.task_view(task_id)))

    async def events(self, request: Request) -> Response:
        return self._stream(request, "events-live",
                            lambda: self.c.fragment("_events_live.html", **self.pages.events_view()))

    async def workers(self, request: Request) -> Response:
        return self._stream(request, "workers-live",
                            lambda: self.c.fragment("_workers_live.html", **self.pages.workers_view(),
                                                    flower_url=self.c.flower_url))

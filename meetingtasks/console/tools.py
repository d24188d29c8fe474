"""The console's place for the operators' tools: a task's priority, ``top``, profiles, event replay.

Each page reads what the tool's own module owns and each action is the tool's Python API run through
:meth:`Actions._handle` (CSRF, confirmation, audit log, a notice back), like every other console action:

- ``POST /task/priority``: :func:`meetingtasks.store.moves.set_priority` (a task's "promote" is the Scheduled page's
  run now, ``POST /scheduled/run-now``, which is :func:`meetingtasks.store.moves.promote`);
- ``GET /top`` (live by ``/live/top``): :func:`meetingtasks.store.rollup.top_report`;
- ``GET /profiles``, ``GET /profiles/{type}/{id}`` (a flame view, :mod:`.flame`), ``POST /profiles/request``:
  :class:`meetingtasks.worker.profiling.Profiles`;
- ``GET /events/replay``, ``POST /events/replay``: :class:`meetingtasks.events.replay.EventReplay`, whose dry run
  is the confirmation page's preview.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from meetingtasks.console.actions import Actions, Plan
from meetingtasks.console.context import Console
from meetingtasks.console.flame import MIN_SHARE, flame_of
from meetingtasks.console.live import Live
from meetingtasks.core.errors import InvalidReplay, MoveRefused
from meetingtasks.core.priority import PRIORITY_ORDER, Priority
from meetingtasks.core.registry import REGISTRY
from meetingtasks.events.channels import CHANNELS
from meetingtasks.events.replay import EventReplay, ReplayReport, stream_position
from meetingtasks.store import moves
from meetingtasks.store.rollup import WINDOWS, RollupReader, reader_for, top_report
from meetingtasks.worker.profiling import Profile, Profiles

#: Runs one request from the console may ask to profile.
MAX_PROFILE_RUNS = 1_000
#: What a task type's name may be (a profile request names one; also bounds the Redis key it makes).
TYPE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
#: Statuses whose priority can change (see :mod:`meetingtasks.store.moves`).
MOVABLE = ("QUEUED", "SCHEDULED", "RETRYING")


def _field(form: FormData, name: str) -> str:
    return str(form.get(name) or "").strip()


def describe_replay(report: ReplayReport) -> str:
    """A dry run's per-subscription counts, in one line (the confirmation's and the audit log's)."""
    per = "; ".join(f"{s.name}: {s.events} event(s), {s.tasks} task(s)"
                    + (f", {s.already} already queued" if s.already else "")
                    + (f", {s.failed} failing" if s.failed else "") for s in report.subscriptions)
    return f"{report.events} event(s) in the window; per subscription: {per or 'none on this channel'}"


class Tools:
    def __init__(self, console: Console, actions: Actions, live: Live) -> None:
        self.c = console
        self.p = console.platform
        self.actions = actions
        self.live = live
        self.profiles = Profiles(self.p)
        # The task page's priority form (a template of its own, included by task.html) lists them.
        console.env.globals.setdefault("priorities", [p.value for p in PRIORITY_ORDER])
        console.env.globals.setdefault("movable", MOVABLE)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/task/priority", self.set_priority, methods=["POST"]),
            Route("/top", self.top),
            Route("/live/top", self.live_top),
            Route("/profiles", self.profiles_page),
            Route("/profiles/request", self.request_profile, methods=["POST"]),
            Route("/profiles/{type}/{id}", self.profile_page),
            Route("/events/replay", self.replay_page),
            Route("/events/replay", self.replay, methods=["POST"]),
        ]

    # --- a task's priority ---------------------------------------------------------------------------------
    def priority_plan(self, form: FormData) -> Plan:
        task_id = _field(form, "task")
        if not task_id:
            raise ValueError("no task id given")
        priority = Priority.parse(_field(form, "priority") or None, Priority.NORMAL)

        def run() -> tuple[int, str]:
            try:
                outcome = moves.set_priority(self.p, task_id, priority)
            except MoveRefused as exc:
                return 0, f"refused: {exc}"
            return int(outcome.moved), outcome.describe()

        return Plan("reprioritize", f"move task {task_id} to priority {priority.value}", 1, run)

    async def set_priority(self, request: Request) -> Response:
        return await self.actions._handle(request, "/task", self.priority_plan)

    # --- top -----------------------------------------------------------------------------------------------
    def top_view(self, reader: RollupReader | None = None) -> dict[str, Any]:
        report = top_report(self.p, reader=reader)
        windows = {name: report[name] for name in WINDOWS}
        return {"report": report, "windows": windows}

    def top(self, request: Request) -> Response:
        return self.c.render(request, "top.html", page="top", **self.top_view())

    async def live_top(self, request: Request) -> Response:
        # One reader per open page: it keeps the settled slots, so each refresh reads only the newest three.
        reader = await run_in_threadpool(reader_for, self.p)
        return self.live._stream(request, "top-live",
                                 lambda: self.c.fragment("_top_live.html", **self.top_view(reader)))

    # --- profiles ------------------------------------------------------------------------------------------
    def _profiled_types(self) -> dict[str, int]:
        """Task type -> profiles kept, for every type the console knows or that has runs requested."""
        names = sorted({spec.name for spec in REGISTRY.all()} | set(self.profiles.requested()))
        with self.p.redis().pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(self.p.keys.profiles(name))
            counts = pipe.execute()
        return dict(zip(names, (int(n) for n in counts), strict=True))

    def profiles_page(self, request: Request) -> Response:
        chosen = (request.query_params.get("type") or "").strip()
        kept: list[Profile] = []
        if chosen:
            if not TYPE_NAME.match(chosen):
                raise ValueError(f"{chosen[:80]!r} is not a task type name")
            kept = self.profiles.kept(chosen)
        return self.c.render(request, "profiles.html", page="profiles", counts=self._profiled_types(),
                             requested=self.profiles.requested(), chosen=chosen, kept=kept,
                             keep=self.p.settings.profile_keep)

    def profile_page(self, request: Request) -> Response:
        task_type, profile_id = request.path_params["type"], request.path_params["id"]
        kept = self.profiles.kept(task_type) if TYPE_NAME.match(task_type) else []
        found = next((p for p in kept if p.id == profile_id), None)
        if found is None:
            return self.c.render(request, "error.html", page="profiles", status_code=404,
                                 error=f"no kept profile {profile_id!r} of {task_type!r} (kept: the latest "
                                       f"{self.p.settings.profile_keep} per type, for a week)")
        flame, why = None, ""
        if found.session is None:
            why = "its session was over profile_max_bytes and was not kept: the text rendering is below"
        else:
            try:
                flame = flame_of(found.session)
            except ValueError as exc:
                why = str(exc)
        return self.c.render(request, "profile.html", page="profiles", profile=found, flame=flame, why=why,
                             min_share=MIN_SHARE * 100)

    def profile_plan(self, form: FormData) -> Plan:
        task_type = _field(form, "type")
        if not TYPE_NAME.match(task_type):
            raise ValueError(f"{task_type[:80]!r} is not a task type name")
        try:
            runs = int(_field(form, "runs") or "1")
        except ValueError:
            raise ValueError(f"runs {_field(form, 'runs')[:40]!r} is not a whole number") from None
        if not 1 <= runs <= MAX_PROFILE_RUNS:
            raise ValueError(f"runs must be 1 to {MAX_PROFILE_RUNS}, got {runs}")
        unknown = "" if REGISTRY.find(task_type) else " (a type this console does not know: see --include)"

        def run() -> tuple[int, str]:
            now = self.profiles.request(task_type, runs)
            return runs, f"the next {now} run(s) of {task_type} will be profiled by whichever worker runs them"

        return Plan("profile", f"profile the next {runs} run(s) of {task_type}{unknown}", runs, run)

    async def request_profile(self, request: Request) -> Response:
        return await self.actions._handle(request, "/profiles", self.profile_plan)

    # --- event replay --------------------------------------------------------------------------------------
    def replay_page(self, request: Request) -> Response:
        subscriptions = EventReplay(self.p).subscriptions
        by_channel = {channel: sorted((s for s in subscriptions if s.channel == channel), key=lambda s: s.name)
                      for channel in CHANNELS}
        chosen = request.query_params.get("channel") or ""
        return self.c.render(request, "replay.html", page="events", by_channel=by_channel, chosen=chosen)

    def replay_plan(self, form: FormData) -> Plan:
        channel = _field(form, "channel")
        since = _field(form, "since")
        if not since:
            raise ValueError("give the start of the window (since)")
        until = _field(form, "until") or None
        subscription = _field(form, "subscription") or None
        again = form.get("again") == "1"
        replay = EventReplay(self.p)
        window = f"{channel} from {since} to {until or 'the newest event'}" + (
            f", subscription {subscription}" if subscription else "") + (" (again)" if again else "")
        if form.get("confirmed") == "1":
            # The preview was the confirmation page; a dry run reads the whole window, so it is not run twice:
            # only what the replay refuses at once is checked here, so that a refusal is a notice, not an audit entry.
            if channel not in CHANNELS:
                raise InvalidReplay(f"unknown channel {channel!r}; channels: {', '.join(sorted(CHANNELS))}")
            if subscription is not None and subscription not in {s.name for s in replay.subscriptions
                                                                 if s.channel == channel}:
                raise InvalidReplay(f"no subscription {subscription!r} on channel {channel}")
            stream_position(since, what="since")
            if until is not None:
                stream_position(until, end=True, what="until")
            what, count = f"replay {window}", 0
        else:
            preview = replay.run(channel, since=since, until=until, subscription=subscription, dry_run=True,
                                 again=again)
            count = preview.tasks
            if preview.repeated:
                what = (f"replay {window}: done before (generation {preview.generation}), so nothing would be "
                        "queued; tick 'again' to replay it anew")
            else:
                what = f"replay {window}: {describe_replay(preview)}"

        def run() -> tuple[int, str]:
            try:
                done = replay.run(channel, since=since, until=until, subscription=subscription, again=again)
            except InvalidReplay as exc:  # a window the checks above let through (since after until)
                return 0, f"error: {exc}"
            if done.repeated:
                return 0, f"replay of {window} was done before: nothing queued (tick 'again' to replay it anew)"
            failed = f", {done.failed} subscription run(s) failed (ask again to retry them)" if done.failed else ""
            return done.tasks, (f"replayed {done.events} event(s) of {channel}: queued {done.tasks} task(s) "
                                f"under generation {done.generation}{failed}")

        return Plan("replay events", what, count, run)

    async def replay(self, request: Request) -> Response:
        return await self.actions._handle(request, "/events/replay", self.replay_plan)

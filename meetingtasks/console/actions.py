"""The console's actions (POST): replay and purge dead letters, cancel or run a scheduled task now, cancel a task.

Each action checks the CSRF token first (403 without it), then asks for a confirmation: a POST without
``confirmed=1`` renders a page saying what will happen to how many, whose button repeats the POST with
``confirmed=1``. Done, the action is written to the audit log (who, when, what, how many) and the browser is sent
back where it came from with a one-line notice. The work itself is the owning module's: replay and purge are
:class:`~meetingtasks.store.deadletter.DeadLetterStore`'s, cancel is :func:`meetingtasks.store.cancel.cancel`'s.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode

import redis
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from meetingtasks.console.auth import CSRF_FIELD
from meetingtasks.console.context import Console, parse_time
from meetingtasks.core.errors import MeetingTasksError, MoveRefused, ReplayRefused, TaskNotFound
from meetingtasks.store.cancel import cancel
from meetingtasks.store.deadletter import DeadLetter, LetterFilter
from meetingtasks.store.moves import promote

#: Largest form accepted (a page's selection is 50 ids).
MAX_FORM_BYTES = 1_000_000
#: Letters read per round while replaying or purging everything matching a filter.
BATCH = 500
#: The field of a confirmation of an action on every matching letter naming the newest letter it counted (its
#: index score, ms): the action stops there.
NEWEST_FIELD = "newest"
#: Its value when nothing matched.
NO_MATCH = "none"


@dataclass(frozen=True)
class Plan:
    """What an action will do: a description for the confirmation and the audit log, how many it touches, and
    the work (returning the notice shown afterwards)."""

    action: str
    what: str
    count: int
    run: Callable[[], tuple[int, str]]
    #: Fields the confirmation's button sends back besides the form's own (what the count was taken up to).
    carry: tuple[tuple[str, str], ...] = ()


def safe_back(form: FormData, default: str) -> str:
    """Where to return after the action: a path of this site only (never another host)."""
    back = str(form.get("back") or default)
    return back if back.startswith("/") and not back.startswith("//") else default


def with_notice(url: str, notice: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'notice': notice})}"


class Actions:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.p = console.platform

    async def _handle(self, request: Request, default_back: str,
                      plan_for: Callable[[FormData], Plan]) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return PlainTextResponse(f"refused: a form over {MAX_FORM_BYTES} bytes", status_code=413)
        # Every console form is application/x-www-form-urlencoded (no uploads): parsed here, without the
        # multipart parser starlette's request.form() would need.
        pairs: builtins.list[tuple[str, str | UploadFile]] = builtins.list(
            parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
        form = FormData(pairs)
        user = self.c.user(request)
        if not self.c.guard.csrf_ok(user, form.get(CSRF_FIELD)):
            return PlainTextResponse("refused: missing or wrong CSRF token (reload the page and try again)",
                                     status_code=403)
        back = safe_back(form, default_back)
        try:
            plan = await run_in_threadpool(plan_for, form)
        except (ValueError, MeetingTasksError) as exc:
            return RedirectResponse(with_notice(back, f"error: {exc}"), status_code=303)
        if form.get("confirmed") != "1":
            fields = [(k, str(v)) for k, v in form.multi_items() if k not in (CSRF_FIELD, "confirmed")]
            fields += [(k, v) for k, v in plan.carry if k not in form]
            return self.c.render(request, "confirm.html", page="", plan=plan, fields=fields,
                                 action_url=request.url.path, back=back)
        try:
            count, notice = await run_in_threadpool(plan.run)
        except (ValueError, MeetingTasksError) as exc:
            # Refused by the owning module (a task known only by its dead letter cannot be cancelled, ...): the
            # reason in one line, as for a refused plan; nothing was done, so nothing is audited.
            return RedirectResponse(with_notice(back, f"error: {exc}"), status_code=303)
        self.c.audit.record(user, plan.action, plan.what, count)
        return RedirectResponse(with_notice(back, notice), status_code=303)

    # --- dead letters --------------------------------------------------------------------------------------
    def _newest_matching(self, clients: Mapping[str, redis.Redis], service: str | None,
                         flt: LetterFilter) -> str:
        """The index score (ms) of the newest letter matching ``flt`` now, or NO_MATCH."""
        cursor = None
        while True:
            page = self.p.dead_letters.page(clients, service, flt, cursor, 1)
            if page.letters:
                return str(int(page.letters[0].last_failure_at * 1000))  # as DeadLetterStore.add scores it
            if page.next_cursor is None:
                return NO_MATCH
            cursor = page.next_cursor

    def _letters(self, form: FormData, verb: str) -> tuple[str, int, Callable[[], builtins.list[DeadLetter]],
                                                           tuple[tuple[str, str], ...]]:
        """(description, count, a reader of the next batch, fields to carry) of the letters an action names."""
        if form.get("scope") == "matching":
            service = str(form.get("service") or "") or None
            if service is not None:
                self.c.check_service(service)
            flt = LetterFilter(reason=str(form.get("reason") or "") or None,
                               task_type=str(form.get("type") or "") or None,
                               since_s=parse_time(str(form.get("since") or "")),
                               until_s=parse_time(str(form.get("until") or "")))
            clients = self.p.service_clients()
            # The confirmation counts the letters matching now and names the newest of them; the confirmed action
            # stops there: letters dead-lettered while the page was open (a new incident nobody has seen) are
            # neither purged nor replayed. Without the field (a confirmed POST sent directly), the bound is taken
            # now, and the audit log records what was done either way.
            newest = str(form.get(NEWEST_FIELD) or "") or self._newest_matching(clients, service, flt)
            if newest == NO_MATCH:
                return f"{verb} every dead letter matching {self._described(form, service, flt)}", 0, lambda: [], (
                    (NEWEST_FIELD, NO_MATCH),)
            if not newest.isdigit():
                raise ValueError(f"{NEWEST_FIELD} {newest!r} is not one this console gave (start again)")
            # Half a millisecond above the newest letter's score, so that the filter's own rounding to whole
            # milliseconds (LetterFilter.score_range) keeps it and stops right after it.
            bound_s = (int(newest) + 0.5) / 1000
            flt = replace(flt, until_s=bound_s if flt.until_s is None else min(flt.until_s, bound_s))
            count = self.p.dead_letters.count_matching(clients, service, flt)[0]
            described = self._described(form, service, flt)
            state: dict[str, str | None] = {"cursor": None}
            done = [False]

            def next_batch() -> builtins.list[DeadLetter]:
                # Walks the matching letters once, newest first, with the listing's cursor: purged and replayed
                # letters leave the index, refused ones stay behind the cursor and are not met again.
                while not done[0]:
                    page = self.p.dead_letters.page(clients, service, flt, state["cursor"], BATCH)
                    state["cursor"] = page.next_cursor
                    done[0] = page.next_cursor is None
                    if page.letters:
                        return page.letters
                return []

            return f"{verb} every dead letter matching {described}", count, next_batch, ((NEWEST_FIELD, newest),)
        chosen = [str(v) for v in form.getlist("letter")]
        if not chosen:
            raise ValueError("no dead letter selected")
        letters = []
        known = self.c.services()
        for item in chosen:
            service, _, letter_id = item.partition("/")
            if service not in known or not letter_id:
                raise ValueError(f"{item!r} names no dead letter (service/id)")
            letters.append(DeadLetter(id=letter_id, service=service, reason="", error=""))
        given = [letters]
        return (f"{verb} {len(letters)} selected dead letter(s): {', '.join(chosen[:5])}"
                f"{' ...' if len(chosen) > 5 else ''}", len(letters), lambda: given.pop() if given else [], ())

    @staticmethod
    def _described(form: FormData, service: str | None, flt: LetterFilter) -> str:
        return ", ".join(f"{k}={v}" for k, v in (("service", service), ("reason", flt.reason),
                                                 ("type", flt.task_type), ("since", form.get("since")),
                                                 ("until", form.get("until"))) if v) or "no filter"

    def replay_plan(self, form: FormData) -> Plan:
        what, count, next_batch, carry = self._letters(form, "replay")

        def run() -> tuple[int, str]:
            replayed = refused = gone = 0
            while batch := next_batch():
                for letter in batch:
                    try:
                        done = self.p.dead_letters.replay(self.p.redis(letter.service), letter.id, letter.service)
                        replayed += done.replayed
                        gone += not done.replayed
                    except ReplayRefused:
                        refused += 1
                    except TaskNotFound:
                        gone += 1
            extra = "".join(f", {n} {why}" for n, why in ((refused, "refused (not replayable)"),
                                                          (gone, "already gone")) if n)
            return replayed, f"replayed {replayed} dead letter(s){extra}"

        return Plan("replay", what, count, run, carry)

    def purge_plan(self, form: FormData) -> Plan:
        what, count, next_batch, carry = self._letters(form, "purge")

        def run() -> tuple[int, str]:
            removed = 0
            while batch := next_batch():
                by_service: dict[str, builtins.list[str]] = {}
                for letter in batch:
                    by_service.setdefault(letter.service, []).append(letter.id)
                for service, ids in by_service.items():
                    removed += self.p.dead_letters.remove(self.p.redis(service), service, ids)
            return removed, f"purged {removed} dead letter(s)"

        return Plan("purge", what, count, run, carry)

    async def replay(self, request: Request) -> Response:
        return await self._handle(request, "/dead-letters", self.replay_plan)

    async def purge(self, request: Request) -> Response:
        return await self._handle(request, "/dead-letters", self.purge_plan)

    # --- scheduled and tasks -------------------------------------------------------------------------------
    @staticmethod
    def _task_id(form: FormData) -> str:
        task_id = str(form.get("task") or "").strip()
        if not task_id:
            raise ValueError("no task id given")
        return task_id

    def cancel_plan(self, form: FormData) -> Plan:
        task_id = self._task_id(form)

        def run() -> tuple[int, str]:
            outcome = cancel(self.p, task_id)
            return int(outcome.ok), outcome.describe()

        return Plan("cancel", f"cancel task {task_id}", 1, run)

    def run_now_plan(self, form: FormData) -> Plan:
        task_id = self._task_id(form)
        self.c.check_service(str(form.get("service") or ""))  # the form names it: a wrong one is refused

        def run() -> tuple[int, str]:
            # One owner of "run a scheduled task now": meetingtasks.store.moves.promote (also the task page's promote).
            try:
                promote(self.p, task_id)
            except (MoveRefused, TaskNotFound) as exc:
                return 0, f"task {task_id} is not waiting any more: {exc}"
            return 1, f"task {task_id} queued now"  # a worker may have started it already

        return Plan("run now", f"run scheduled task {task_id} now", 1, run)

    async def cancel(self, request: Request) -> Response:
        return await self._handle(request, "/scheduled", self.cancel_plan)

    async def run_now(self, request: Request) -> Response:
        return await self._handle(request, "/scheduled", self.run_now_plan)

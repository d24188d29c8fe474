"""The console's pages (GET): each gathers its data from the module that owns it and renders a template.

Every list is paginated so that a page costs the same at any size: dead letters by a cursor over the index
(:meth:`DeadLetterStore.page`), the delayed set by rank (:meth:`DelayedSet.page`), the audit log by offset into
a capped list.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from meetingtasks.console.context import PAGE_SIZE, Console, parse_cursor, parse_page, parse_time
from meetingtasks.core.errors import TaskNotFound
from meetingtasks.core.message import decode_body, describe, loads
from meetingtasks.core.priority import PRIORITY_ORDER, Priority
from meetingtasks.core.registry import REGISTRY
from meetingtasks.core.secret_fields import MASK, mask, mask_payload, mask_text
from meetingtasks.events.channels import CHANNELS
from meetingtasks.events.retention import stream_states
from meetingtasks.metrics.collector import read_gateways
from meetingtasks.metrics.heartbeat import read_heartbeats
from meetingtasks.metrics.reporter import read_reports
from meetingtasks.store.cancel import locate
from meetingtasks.store.deadletter import LetterFilter
from meetingtasks.store.rollup import read_series
from meetingtasks.store.stats import collect

#: A service with more dead letters shows them on one row, not split by priority: splitting reads every letter,
#: and the overview refreshes every second for each open page.
SPLIT_DEAD_LETTERS_UP_TO = 2_000
#: A reason or type filter reads at most this many letters per service to fill a page and to count (a page
#: then offers to search on; the confirmation of an action on all of them counts them all).
COUNT_READ_AT_MOST = 10_000
#: Events shown per channel.
LAST_EVENTS = 10


def masked_payload(task_type: str | None, payload: Any) -> Any:
    """A payload as every display shows it: sealed values and the type's secret fields as ``***``."""
    shown = mask(payload)
    spec = REGISTRY.find(task_type) if task_type else None
    # An unknown type (another deployment's) has no fields known to be secret: its sealed values still show ***.
    return mask_payload(spec.secret_fields, shown) if spec is not None else shown


def masked_message(task_type: str | None, text: str | None) -> Any:
    """A dead letter's original message for display: the body decoded, its payload masked like any payload, the
    ``argsrepr``/``kwargsrepr`` headers (the payload again, as text) hidden when the type has secret fields."""
    if text is None:
        return None
    # Sealed values are masked in the text first: the body is JSON inside a JSON string (and argsrepr).
    text = mask_text(text)
    try:
        message = loads(text)
    except ValueError:
        return text
    if not isinstance(message, dict):
        return message
    spec = REGISTRY.find(task_type) if task_type else None
    body = decode_body(message) if isinstance(message.get("body"), str) else None
    if isinstance(body, list) and len(body) >= 2:
        if isinstance(body[0], list) and body[0]:
            body[0] = [masked_payload(task_type, body[0][0]), *body[0][1:]]
        if isinstance(body[1], dict) and body[1]:
            body[1] = masked_payload(task_type, body[1])
        message["body"] = body  # readable: the call's args, not a quoted string
    headers = message.get("headers")
    if spec is not None and spec.secret_fields and isinstance(headers, dict):
        for name in ("argsrepr", "kwargsrepr"):
            if name in headers:
                headers[name] = MASK
    return message


def letter_filter(request: Request) -> LetterFilter:
    q = request.query_params
    return LetterFilter(reason=q.get("reason") or None, task_type=q.get("type") or None,
                        since_s=parse_time(q.get("since")), until_s=parse_time(q.get("until")))




class Pages:
    def __init__(self, console: Console) -> None:
        self.c = console
        self.p = console.platform

    def service_param(self, request: Request) -> str | None:
        service = request.query_params.get("service") or None
        return None if service is None else self.c.check_service(service)

    # --- overview ------------------------------------------------------------------------------------------
    def overview_rows(self) -> dict[str, Any]:
        rows = collect(self.p, split_dead_letters_up_to=SPLIT_DEAD_LETTERS_UP_TO)
        totals = {name: sum(getattr(r, name) for r in rows) for name in ("queued", "unacked", "scheduled",
                                                                          "dead_lettered")}
        return {"rows": rows, "totals": totals, "now": time.time()}

    def overview(self, request: Request) -> Response:
        return self.c.render(request, "overview.html", page="overview", **self.overview_rows(),
                             priorities=[p.value for p in PRIORITY_ORDER])

    def series(self, request: Request) -> Response:
        priority = request.query_params.get("priority") or None
        if priority is not None and priority not in {p.value for p in PRIORITY_ORDER}:
            return JSONResponse({"error": f"unknown priority {priority!r}"}, status_code=400)
        return JSONResponse(read_series(self.p, priority=priority).to_dict())

    def stats_json(self, request: Request) -> Response:
        rows = collect(self.p, split_dead_letters_up_to=SPLIT_DEAD_LETTERS_UP_TO)
        return JSONResponse([row.to_dict() for row in rows])

    # --- dead letters --------------------------------------------------------------------------------------
    def dead_letters(self, request: Request) -> Response:
        started = time.perf_counter()
        service = self.service_param(request)
        flt = letter_filter(request)
        clients = self.p.service_clients()
        page = self.p.dead_letters.page(clients, service, flt, parse_cursor(request.query_params.get("cursor")),
                                        PAGE_SIZE, read_at_most=COUNT_READ_AT_MOST)
        total, exact = self.p.dead_letters.count_matching(clients, service, flt, COUNT_READ_AT_MOST)
        letters = [(letter, masked_payload(letter.task_type, letter.payload)) for letter in page.letters]
        filters = {k: v for k, v in request.query_params.items() if k in ("service", "reason", "type", "since",
                                                                          "until") and v}
        return self.c.render(request, "dead_letters.html", page="dead-letters", letters=letters, total=total,
                             exact=exact, read_at_most=COUNT_READ_AT_MOST, next_cursor=page.next_cursor,
                             searched_to=page.searched_to, filters=filters, services=self.c.services(),
                             audit=self.c.audit.latest(limit=10), now=time.time(),
                             took_ms=(time.perf_counter() - started) * 1000)

    def dead_letter(self, request: Request) -> Response:
        service = request.path_params["service"]
        if service not in self.c.services():
            return self.not_found(request, f"unknown service {service!r}")
        try:
            _, letter = self.p.dead_letters.locate(self.p.service_clients(service), request.path_params["id"])
        except TaskNotFound as exc:
            return self.not_found(request, str(exc))
        message = masked_message(letter.task_type, letter.message)
        return self.c.render(request, "dead_letter.html", page="dead-letters", letter=letter,
                             payload=masked_payload(letter.task_type, letter.payload), message=message)

    # --- scheduled -----------------------------------------------------------------------------------------
    def scheduled(self, request: Request) -> Response:
        started = time.perf_counter()
        service = self.service_param(request) or self.c.services()[0]
        priority = Priority(request.query_params.get("priority") or Priority.NORMAL.value)
        page_no = parse_page(request.query_params.get("page"))
        client = self.p.redis(service)
        counts = self.p.delayed.counts(client, service)
        rows = []
        for waiting in self.p.delayed.page(client, service, priority, (page_no - 1) * PAGE_SIZE, PAGE_SIZE):
            task_type = None
            if waiting.message is not None:
                try:
                    task_type = describe(loads(waiting.message)).task_name
                except (ValueError, TypeError, AttributeError):
                    task_type = None
            rows.append((waiting, task_type))
        return self.c.render(request, "scheduled.html", page="scheduled", service=service, priority=priority.value,
                             counts={p.value: n for p, n in counts.items()}, rows=rows, page_no=page_no,
                             pages=max(1, -(-counts[priority] // PAGE_SIZE)), services=self.c.services(),
                             priorities=[p.value for p in PRIORITY_ORDER], now=time.time(),
                             took_ms=(time.perf_counter() - started) * 1000)

    # --- task ----------------------------------------------------------------------------------------------
    def task_view(self, task_id: str) -> dict[str, Any]:
        """Everything known of a task, for the page and its live updates; raises TaskNotFound."""
        try:
            service = locate(self.p, task_id)
        except TaskNotFound:
            # Its status expired, but a dead letter of a task outlives it (filed under the task id).
            service = self.p.dead_letters.locate(self.p.service_clients(), task_id)[0]
        client = self.p.redis(service)
        record = self.p.status.get(client, task_id)
        shown: dict[str, Any] = (record.to_dict() if record is not None
                                 else {"id": task_id, "status": "SCHEDULED", "history": []})
        payload: Any = None
        held = ""
        entry = self.p.delayed.entry(client, service, task_id)
        if entry is not None:
            payload, held = describe(loads(entry[1])).payload, "the delayed set"
        else:
            letter = client.hget(self.p.keys.dlq(service), task_id)
            if letter is not None:
                payload, held = loads(letter).get("payload"), "its dead letter"
        batch_id = shown.get("batch")
        batch = ({(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                  for k, v in client.hgetall(self.p.keys.batch(batch_id)).items()} if batch_id else {})
        history = shown.get("history", [])
        first = history[0]["time"] if history else None
        return {"task_id": task_id, "service": service, "record": shown, "history": history, "first": first,
                "payload": masked_payload(shown.get("type"), payload) if held else None, "held": held,
                "batch": batch, "now": time.time()}

    def task(self, request: Request) -> Response:
        task_id = (request.query_params.get("id") or "").strip()
        if not task_id:
            return self.c.render(request, "task.html", page="task", view=None)
        try:
            view = self.task_view(task_id)
        except TaskNotFound as exc:
            return self.c.render(request, "task.html", page="task", view=None, error=str(exc), status_code=404)
        return self.c.render(request, "task.html", page="task", view=view)

    # --- events --------------------------------------------------------------------------------------------
    def events_view(self) -> dict[str, Any]:
        client = self.p.redis()
        keys = self.p.keys
        with client.pipeline(transaction=False) as pipe:
            for channel in CHANNELS:
                pipe.xrevrange(keys.event_stream(channel), count=LAST_EVENTS)
            recent = pipe.execute()
        last: dict[str, list[dict[str, Any]]] = {}
        for channel, entries in zip(CHANNELS, recent, strict=True):
            shown = []
            for entry_id, fields in entries:
                raw = fields.get(b"event") or fields.get("event")
                try:
                    event = mask(loads(raw)) if raw is not None else {}
                except ValueError:
                    event = {"unreadable": mask_text(str(raw))}
                shown.append({"entry": entry_id.decode() if isinstance(entry_id, bytes) else entry_id, **event})
            last[channel] = shown
        reports = read_reports(client, keys.bridges)
        return {"states": stream_states(self.p), "group": keys.bridge_group, "last": last, "bridges": reports,
                "now": time.time()}

    def events(self, request: Request) -> Response:
        return self.c.render(request, "events.html", page="events", **self.events_view())

    # --- workers and gateways ------------------------------------------------------------------------------
    def workers_view(self) -> dict[str, Any]:
        now = time.time()
        beats = {svc: read_heartbeats(client, self.p, svc, now) for svc, client in self.p.service_clients().items()}
        return {"beats": beats, "gateways": read_gateways(self.p), "bridges": read_reports(self.p.redis(),
                                                                                            self.p.keys.bridges),
                "now": now}

    def workers(self, request: Request) -> Response:
        return self.c.render(request, "workers.html", page="workers", **self.workers_view())

    # --- audit ---------------------------------------------------------------------------------------------
    def audit(self, request: Request) -> Response:
        page_no = parse_page(request.query_params.get("page"))
        entries = self.c.audit.latest((page_no - 1) * PAGE_SIZE, PAGE_SIZE)
        return self.c.render(request, "audit.html", page="audit", entries=entries, page_no=page_no,
                             more=len(entries) == PAGE_SIZE)

    def not_found(self, request: Request, message: str) -> HTMLResponse:
        return self.c.render(request, "error.html", page="", error=message, status_code=404)

"""The meeting scenario end to end, against a running platform (``meetingtasks up``), as ``meetingtasks demo``
runs it.

Three people (alice, bob, carol) connect to the WebSocket gateway, each with a token minted with the
gateway secret, and do everything through it: register, log in, then reconnect with a token for their new
user id (what an application's sign-in would hand them: the gateway takes the acting user from the token,
never from the payload), alice creates a meeting, all three join.
Alice submits a spoken clip (shipped with the ai service) for speech recognition; the transcript and its
emotion reach *every* participant's client as pushes (their meeting notices, see
:mod:`meetingtasks.services.meeting.tasks`). Alice ends the meeting and its recording stops. Events on
the five channels are watched on pub/sub along the way. The demo prints a timeline with the latency of
every step and succeeds only if every step happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from meetingtasks.events.channels import CHANNELS
from meetingtasks.events.live import LiveMessage, LiveSubscriber
from meetingtasks.gateway.tokens import mint_token, require_secret
from meetingtasks.services.ai.clips import clip
from meetingtasks.services.blobs import BlobStore
from meetingtasks.store.platform import Platform
from meetingtasks.store.status_schema import TERMINAL_NAMES

PEOPLE = ("alice", "bob", "carol")
DEFAULT_CLIP = "greeting.wav"


class DemoFailed(Exception):
    """A step did not happen; the message says which and why."""


@dataclass
class Row:
    at_s: float
    latency_s: float | None
    text: str


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    rows: list[Row] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    echo: Callable[[str], None] | None = None

    def add(self, text: str, *, started: float | None = None, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        row = Row(now - self.t0, None if started is None else now - started, text)
        with self.lock:
            self.rows.append(row)
        if self.echo is not None:
            self.echo(format_row(row))


def format_row(row: Row) -> str:
    latency = "" if row.latency_s is None else f"{row.latency_s * 1000:8.0f} ms"
    return f"{row.at_s:8.3f} s {latency:>11}  {row.text}"


class Client:
    """One person's WebSocket session with the gateway: submit, follow, wait for pushes."""

    def __init__(self, person: str, client_id: str, url: str, token: str) -> None:
        self.person = person
        self.client_id = client_id
        self.url = url
        self.token = token
        self.ws: ClientConnection | None = None
        self.refs = itertools.count(1)
        self.accepted: dict[int, asyncio.Future[str]] = {}
        self.finished: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        sep = "&" if "?" in self.url else "?"
        self.ws = await connect(f"{self.url}{sep}token={self.token}", open_timeout=10)
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def reconnect_as(self, client_id: str, token: str) -> None:
        """Close this connection and open one with ``token`` (whose subject is ``client_id``)."""
        await self.close()
        self.client_id, self.token, self.reader, self.ws = client_id, token, None, None
        await self.open()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        if self.ws is not None:
            await self.ws.close()

    def _done(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        if task_id not in self.finished:
            self.finished[task_id] = asyncio.get_running_loop().create_future()
        return self.finished[task_id]

    async def _read(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            frame = orjson.loads(raw)
            op = frame.get("op")
            if op == "accepted":
                future = self.accepted.pop(frame.get("ref"), None)
                if future is not None and not future.done():
                    future.set_result(frame["id"])
            elif op == "status" and frame.get("status") in TERMINAL_NAMES:
                done = self._done(frame["id"])
                if not done.done():
                    done.set_result(frame)
            elif op == "error":
                future = self.accepted.pop(frame.get("ref"), None)
                if future is not None and not future.done():
                    future.set_exception(DemoFailed(f"{self.person}: the gateway refused: {frame.get('error')}"))

    async def submit(self, task_type: str, payload: dict[str, Any]) -> str:
        assert self.ws is not None
        ref = next(self.refs)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.accepted[ref] = future
        await self.ws.send(orjson.dumps({"op": "submit", "ref": ref, "type": task_type, "payload": payload}).decode())
        return await future

    async def subscribe(self, task_id: str) -> None:
        assert self.ws is not None
        self._done(task_id)
        await self.ws.send(orjson.dumps({"op": "subscribe", "id": task_id}).decode())

    async def outcome(self, task_id: str, timeout_s: float, what: str) -> Any:
        """The result of a SUCCEEDED push, or :class:`DemoFailed`."""
        try:
            frame = await asyncio.wait_for(asyncio.shield(self._done(task_id)), timeout_s)
        except TimeoutError:
            raise DemoFailed(f"{self.person}: no final status for {what} within {timeout_s:g}s "
                             "(are all five workers and the bridge running?)") from None
        if frame["status"] != "SUCCEEDED":
            raise DemoFailed(f"{self.person}: {what} ended {frame['status']}: {frame.get('error')}")
        return frame.get("result")

    async def run(self, task_type: str, payload: dict[str, Any], timeout_s: float) -> Any:
        task_id = await self.submit(task_type, payload)
        return await self.outcome(task_id, timeout_s, task_type)


class EventWatch:
    """Every event of the five channels, heard live on pub/sub; those of the demo's meeting go on the timeline
    (the ones heard before the meeting's id was known too, at the time they were heard)."""

    def __init__(self, platform: Platform, timeline: Timeline) -> None:
        self.timeline = timeline
        self.heard: list[tuple[float, dict[str, Any]]] = []
        self.meeting_id: str | None = None
        self.changed = threading.Condition()
        self.sub = LiveSubscriber(platform, list(CHANNELS), callback=self._heard, name="demo events")

    def _mine(self, event: dict[str, Any]) -> bool:
        return self.meeting_id is not None and (event.get("payload") or {}).get("meeting_id") == self.meeting_id

    def _heard(self, message: LiveMessage) -> None:
        event = message.json()
        at = time.monotonic()
        with self.changed:
            self.heard.append((at, event))
            self.changed.notify_all()
        if self._mine(event):
            self._show(at, event)

    def _show(self, at: float, event: dict[str, Any]) -> None:
        payload = event.get("payload") or {}
        detail = {"user": payload.get("user_id"), "label": payload.get("label"),
                  "recording": payload.get("recording_id")}
        extra = ", ".join(f"{k} {str(v)[:8]}" for k, v in detail.items() if v)
        self.timeline.add(f"  event {event['type']} on {event['channel']}" + (f" ({extra})" if extra else ""),
                          at=at)

    def follow(self, meeting_id: str) -> None:
        with self.changed:
            self.meeting_id = meeting_id
            earlier = [(at, e) for at, e in self.heard if self._mine(e)]
        for at, event in earlier:
            self._show(at, event)

    def wait(self, event_type: str, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while sum(1 for _, e in self.heard if e["type"] == event_type and self._mine(e)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoFailed(f"event {event_type} of the meeting not seen within {timeout_s:g}s")
                self.changed.wait(left)

    def count(self) -> int:
        with self.changed:
            return sum(1 for _, e in self.heard if self._mine(e))


async def scenario(platform: Platform, gateway_url: str, timeline: Timeline, *, timeout_s: float,
                   clip_name: str) -> dict[str, Any]:
    secret = require_secret(platform.settings)
    run_id = secrets.token_hex(3)
    watch = EventWatch(platform, timeline)
    watch.sub.start()
    if not watch.sub.wait_ready(10):
        raise DemoFailed("could not listen to the event channels on Redis")
    clients = [Client(p, f"demo-{run_id}-{p}", gateway_url,
                      mint_token(secret, f"demo-{run_id}-{p}", max(600, int(timeout_s * 10)))) for p in PEOPLE]
    alice = clients[0]
    try:
        started = time.monotonic()
        try:
            await asyncio.gather(*(c.open() for c in clients))
        except (OSError, TimeoutError) as exc:
            raise DemoFailed(f"cannot connect to the gateway at {gateway_url} ({exc}); is `meetingtasks up` "
                             "running? (or pass --gateway ws://HOST:PORT/ws)") from None
        timeline.add(f"{', '.join(PEOPLE)} connected to the gateway {gateway_url}", started=started)

        async def step(client: Client, task_type: str, payload: dict[str, Any], say: Callable[[Any], str]) -> Any:
            began = time.monotonic()
            result = await client.run(task_type, payload, timeout_s)
            timeline.add(f"{client.person}: {task_type} SUCCEEDED, {say(result)}", started=began)
            return result

        password = secrets.token_urlsafe(12)
        users = await asyncio.gather(*(
            step(c, "user_register", {"username": f"{c.person}_{run_id}", "email": f"{c.person}@demo.example",
                                      "password": password}, lambda r: f"user {r['user_id'][:8]}")
            for c in clients))
        await asyncio.gather(*(
            step(c, "user_login", {"username": f"{c.person}_{run_id}", "password": password},
                 lambda r: "session token issued") for c in clients))
        ids = [u["user_id"] for u in users]
        began = time.monotonic()
        ttl_s = max(600, int(timeout_s * 10))
        await asyncio.gather(*(c.reconnect_as(uid, mint_token(secret, uid, ttl_s))
                               for c, uid in zip(clients, ids, strict=True)))
        timeline.add(f"{', '.join(PEOPLE)} reconnected with tokens for their user ids", started=began)

        meeting = await step(alice, "meeting_create", {"host_id": ids[0], "title": f"Demo stand-up {run_id}",
                                                       "max_duration_s": 600},
                             lambda r: f"meeting {r['meeting_id'][:8]} is {r['state']}")
        meeting_id = meeting["meeting_id"]
        watch.follow(meeting_id)
        joins = await asyncio.gather(*(
            step(c, "meeting_user_join", {"meeting_id": meeting_id, "user_id": uid},
                 lambda r: f"{r['participants']} in the meeting") for c, uid in zip(clients, ids, strict=True)))
        for client, joined in zip(clients, joins, strict=True):
            notices = joined.get("notices") or {}
            if set(notices) != {"speech_recognition", "emotion_detection"}:
                raise DemoFailed(f"{client.person}: the join did not arm the meeting notices ({joined})")
            for task_id in notices.values():
                await client.subscribe(task_id)
        await asyncio.to_thread(watch.wait, "recording.started", 1, timeout_s)

        spoken = clip(clip_name)
        began = time.monotonic()
        audio_ref = BlobStore(platform).put(spoken.read(), content_type="audio/wav")
        transcript = await step(alice, "speech_recognition", {"audio_ref": audio_ref, "meeting_id": meeting_id},
                                lambda r: f"heard {r['text']!r}")
        timeline.add(f"  (spoken: {spoken.text!r})")

        async def pushed(client: Client, kind: str, task_id: str) -> dict[str, Any]:
            notice = await client.outcome(task_id, timeout_s, f"the {kind} notice")
            if not notice.get("available"):
                raise DemoFailed(f"{client.person}: the {kind} notice came without a result")
            result: dict[str, Any] = notice["result"]
            shown = f"transcript {result.get('text')!r}" if kind == "speech_recognition" else \
                f"emotion {result.get('label')} ({result.get('compound')})"
            timeline.add(f"{client.person}: pushed {shown}", started=began)
            return result

        received = await asyncio.gather(*(pushed(c, kind, task_id) for c, joined in zip(clients, joins, strict=True)
                                          for kind, task_id in joined["notices"].items()))

        await step(alice, "meeting_end", {"meeting_id": meeting_id, "ended_by": ids[0]},
                   lambda r: f"after {r['duration_s']:.1f} s with {len(r['participants'])} participants")
        await asyncio.to_thread(watch.wait, "recording.stopped", 1, timeout_s)
        emotion = next(r for r in received if "label" in r)
        return {"meeting_id": meeting_id, "transcript": transcript["text"], "emotion": emotion["label"],
                "pushes": len(received), "events": watch.count()}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        watch.sub.stop()


def run_demo(platform: Platform, gateway_url: str, *, timeout_s: float = 60.0, clip_name: str = DEFAULT_CLIP,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the scenario, echoing the timeline as it happens; raises :class:`DemoFailed`."""
    timeline = Timeline(echo=echo)
    echo(f"{'time':>10} {'latency':>11}  step")
    summary = asyncio.run(scenario(platform, gateway_url, timeline, timeout_s=timeout_s, clip_name=clip_name))
    summary["duration_s"] = time.monotonic() - timeline.t0
    return summary

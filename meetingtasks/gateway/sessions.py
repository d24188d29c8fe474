"""ClientTaskManager: the gateway's sessions, their clients, and the routing of status pushes.

A client (the ``sub`` of its token) may hold several sessions (WebSocket connections), at most
``gateway_max_connections_per_client``. Per client: a token bucket on the frames it sends
(``gateway_client_rate_per_s``, burst ``gateway_client_burst``), kept across reconnects until it has
refilled (so closing and reopening a connection never buys a fresh burst), and a cap on its unfinished
tasks (``gateway_max_inflight``). Per session: the tasks it follows (submitted on it, or subscribed to), an
outbound queue drained by its writer (a client too slow to take ``gateway_send_queue`` frames is
disconnected, never waited for), and an idle timer.

What a client may submit, and as whom, is :mod:`meetingtasks.gateway.access`'s decision (default deny; the
acting user from the token).

Who owns a task is written into its status record (field ``client``) at submit, so a client can
``subscribe`` to and ``cancel`` its tasks from any session, after a reconnect or a gateway restart, and
never another client's: a foreign or unknown id gets the same error, so ids of others cannot be probed.

Everything here runs on the gateway's event loop (no locks); Redis calls go to worker threads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis

from meetingtasks.core.errors import MeetingTasksError, TaskNotFound
from meetingtasks.core.message import new_id
from meetingtasks.core.secret_fields import keyring
from meetingtasks.enqueue.dispatcher import Dispatcher
from meetingtasks.gateway import protocol
from meetingtasks.gateway.access import AccessDenied, ClientAccess
from meetingtasks.gateway.limits import GatewayCounters, TokenBucket
from meetingtasks.gateway.submits import SubmitBatcher
from meetingtasks.store.cancel import cancel_task
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import TERMINAL_NAMES, Status, StatusRecord

log = logging.getLogger(__name__)

#: ``Session.follows`` value of a task whose pushes go straight out (otherwise: frames held back).
LIVE = None

Send = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Coroutine[Any, Any, None]]


class TooManyConnections(MeetingTasksError):
    """A client already holds ``gateway_max_connections_per_client`` sessions."""


class ClientState:
    """What the gateway holds for one client id across its sessions."""

    def __init__(self, client_id: str, bucket: TokenBucket) -> None:
        self.id = client_id
        self.bucket = bucket
        self.sessions: set[Session] = set()
        self.unfinished: set[str] = set()


_session_ids = itertools.count(1)


class Session:
    """One WebSocket connection of a client.

    Outgoing frames wait in a deque drained by a writer task that exists only while there is something to
    send, so an idle session costs no task and no queue (memory per idle connection is a gateway target).
    """

    def __init__(self, manager: ClientTaskManager, client: ClientState, send: Send, close: Close) -> None:
        self.id = next(_session_ids)
        self.manager = manager
        self.client = client
        self._send = send
        self._close = close
        self.pending: deque[bytes] | None = None
        self.writer: asyncio.Task[None] | None = None
        #: task id -> LIVE, or the frames held back until the client has its ``accepted``/snapshot.
        self.follows: dict[str, list[bytes] | None] = {}
        self.last_frame_s = time.monotonic()
        self.closed = False

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        pending = self.pending
        if pending is None:
            pending = self.pending = deque()
        if len(pending) >= self.manager.settings.gateway_send_queue:
            self.manager.counters.slow_closed_total += 1
            log.warning("session %s of client %s dropped: %d frames waiting", self.id, self.client.id, len(pending))
            self.close_soon(1013, "too slow: frames are not being read")
            return
        pending.append(frame)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())

    def deliver(self, task_id: str, frame: bytes) -> None:
        held = self.follows.get(task_id, LIVE)
        if held is LIVE:
            self.send(frame)
        else:
            held.append(frame)

    def release(self, task_id: str, *, keep_following: bool, newer_than_s: float | None = None) -> None:
        """Send the frames held for ``task_id`` (those after ``newer_than_s`` only) and go live or stop."""
        held = self.follows.pop(task_id, LIVE) or []
        if keep_following:
            self.follows[task_id] = LIVE
        for frame in held:
            if newer_than_s is not None and protocol.frame_time(frame) <= newer_than_s:
                continue
            self.send(frame)

    def close_soon(self, code: int, reason: str) -> None:
        """Close from the server side (idle, too slow); the receive loop then ends the session."""
        if self.closed:
            return
        self.closed = True
        asyncio.get_running_loop().create_task(self._close(code, reason))

    def stop(self) -> None:
        self.closed = True
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None
        self.pending = None

    async def _write(self) -> None:
        counters = self.manager.counters
        try:
            while self.pending:
                frame = self.pending.popleft()
                await self._send(frame.decode())
                counters.frames_out_total += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection is gone; the receive loop cleans up
            log.debug("session %s: send failed: %s", self.id, exc)
        finally:
            self.writer = None
        self.pending = None


class ClientTaskManager:
    """Sessions, clients, and which session hears about which task."""

    def __init__(self, platform: Platform, dispatcher: Dispatcher | None = None) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.dispatcher = dispatcher or Dispatcher(platform)
        self.submits = SubmitBatcher(self.dispatcher)
        self.counters = GatewayCounters()
        self.clients: dict[str, ClientState] = {}
        self.sessions: set[Session] = set()
        self.routes: dict[str, set[Session]] = {}  # task id -> sessions following it
        self.owners: dict[str, ClientState] = {}  # unfinished task id -> its client, for the in-flight cap
        self.access = ClientAccess(self.settings.gateway_task_types)

    # --- sessions -------------------------------------------------------------------------------------------
    def open(self, client_id: str, send: Send, close: Close) -> Session:
        """A new session of ``client_id``; :class:`TooManyConnections` when the client is at its cap."""
        client = self.clients.get(client_id)
        limit = self.settings.gateway_max_connections_per_client
        if client is not None and len(client.sessions) >= limit:
            self.counters.connections_refused_total += 1
            raise TooManyConnections(f"too many connections for client {client_id!r} (limit {limit}): close one first")
        if client is None:
            s = self.settings
            bucket = TokenBucket.full(s.gateway_client_rate_per_s, s.gateway_client_burst, time.monotonic())
            client = self.clients[client_id] = ClientState(client_id, bucket)
        session = Session(self, client, send, close)
        client.sessions.add(session)
        self.sessions.add(session)
        self.counters.sessions_open += 1
        self.counters.sessions_opened_total += 1
        return session

    def close(self, session: Session) -> None:
        """Forget ``session`` (safe twice). Its tasks run on; the client may ``subscribe`` again later."""
        if session not in self.sessions:
            return
        session.stop()
        self.sessions.discard(session)
        for task_id in session.follows:
            followers = self.routes.get(task_id)
            if followers is not None:
                followers.discard(session)
                if not followers:
                    del self.routes[task_id]
        session.follows.clear()
        client = session.client
        client.sessions.discard(session)
        self._drop_if_idle(client)
        self.counters.sessions_open -= 1
        self.counters.sessions_closed_total += 1
        self.counters.tasks_followed = len(self.routes)

    def _drop_if_idle(self, client: ClientState, now_s: float | None = None) -> None:
        """Forget a client with no session and no unfinished task, once its rate budget has refilled: until
        then a reconnect must find the budget as it was left."""
        if client.sessions or client.unfinished or self.clients.get(client.id) is not client:
            return
        if (time.monotonic() if now_s is None else now_s) >= client.bucket.refilled_by_s():
            del self.clients[client.id]

    def _follow(self, session: Session, task_id: str, held: bool) -> None:
        session.follows[task_id] = [] if held else LIVE
        self.routes.setdefault(task_id, set()).add(session)
        self.counters.tasks_followed = len(self.routes)

    def _unfollow(self, session: Session, task_id: str) -> None:
        session.follows.pop(task_id, None)
        followers = self.routes.get(task_id)
        if followers is not None:
            followers.discard(session)
            if not followers:
                del self.routes[task_id]

    def expire_idle(self, now_s: float | None = None) -> int:
        """Close sessions silent for ``gateway_idle_timeout_s`` that follow no unfinished task."""
        now_s = time.monotonic() if now_s is None else now_s
        for client in [c for c in self.clients.values() if not c.sessions]:
            self._drop_if_idle(client, now_s)  # clients gone whose budget has refilled meanwhile
        limit = self.settings.gateway_idle_timeout_s
        closed = 0
        for session in list(self.sessions):
            if not session.follows and not session.closed and now_s - session.last_frame_s > limit:
                session.close_soon(1000, f"idle for {limit:g}s")
                self.counters.idle_closed_total += 1
                closed += 1
        return closed

    # --- client frames --------------------------------------------------------------------------------------
    async def receive(self, session: Session, text: str | None) -> None:
        """Act on one frame from the client; every problem is answered with an error frame."""
        session.last_frame_s = now = time.monotonic()
        self.counters.frames_in_total += 1
        # Every frame spends the budget, also one the gateway cannot read: each costs a parse and an error frame.
        allowed = session.client.bucket.allow(now)
        if text is None:
            if allowed:
                self._error(session, "binary frames are not supported: send JSON text frames")
            else:
                self._rate_limited(session, None)
            return
        limit = self.settings.gateway_max_frame_bytes
        # The limit is in bytes (UTF-8): up to 4 a character, so only a frame over a quarter of it is encoded
        # to count them.
        size = len(text.encode("utf-8", "surrogatepass")) if len(text) * 4 > limit else 0
        if size > limit:
            self.counters.oversize_frames_total += 1
            self._error(session, f"frame of {size} bytes is over the limit of {limit} bytes")
            return
        try:
            request = protocol.parse_frame(text)
        except protocol.ProtocolError as exc:
            if allowed:
                self._error(session, str(exc), exc.ref)
            else:
                self._rate_limited(session, exc.ref)
            return
        if not allowed:
            self._rate_limited(session, request.ref)
            return
        if isinstance(request, protocol.Submit):
            await self.submit(session, request)
        elif isinstance(request, protocol.Subscribe):
            await self.subscribe(session, request)
        else:
            await self.cancel(session, request)

    def _rate_limited(self, session: Session, ref: protocol.Ref) -> None:
        self.counters.rate_limited_total += 1
        self._error(session, f"rate limit: at most {self.settings.gateway_client_rate_per_s:g} frames/s "
                             f"(burst {self.settings.gateway_client_burst}); slow down", ref)

    def _error(self, session: Session, message: str, ref: protocol.Ref = None) -> None:
        self.counters.errors_sent_total += 1
        session.send(protocol.error(message, ref))

    async def submit(self, session: Session, request: protocol.Submit) -> None:
        client = session.client
        try:
            payload = self.access.check(request.type, request.payload, client.id)
        except AccessDenied as exc:
            self.counters.submits_denied_total += 1
            self._error(session, str(exc), request.ref)
            return
        limit = self.settings.gateway_max_inflight
        if len(client.unfinished) >= limit:
            self.counters.inflight_refused_total += 1
            self._error(session, f"too many unfinished tasks ({limit}): wait for some to finish", request.ref)
            return
        task_id = new_id()
        # Follow before queuing: its first pushes may arrive before the dispatch returns; they are held
        # back until the client has its "accepted".
        self._follow(session, task_id, held=True)
        self.owners[task_id] = client
        client.unfinished.add(task_id)
        try:
            await self.submits.submit(task_type=request.type, payload=payload, priority=request.priority,
                                      task_id=task_id, fields={"client": client.id})
        except (MeetingTasksError, ValueError, redis.RedisError) as exc:
            self._unfollow(session, task_id)
            self.owners.pop(task_id, None)
            client.unfinished.discard(task_id)
            message = str(exc) if not isinstance(exc, redis.RedisError) else f"cannot queue the task now ({exc})"
            self._error(session, message, request.ref)
            return
        self.counters.submits_total += 1
        session.send(protocol.accepted(request.ref, task_id))
        session.release(task_id, keep_following=session in self.routes.get(task_id, ()))

    async def subscribe(self, session: Session, request: protocol.Subscribe) -> None:
        self.counters.subscribes_total += 1
        task_id = request.id
        already = session.follows.get(task_id, "absent") is LIVE
        if not already:
            self._follow(session, task_id, held=True)
        record = await self._owned_record(session, task_id, request.ref)
        if record is None:
            if not already:
                self._unfollow(session, task_id)
            return
        snapshot = protocol.snapshot_event(record)
        session.send(protocol.status(snapshot, keyring(self.platform.settings)))
        if already:
            return
        finished = record.status.is_terminal
        if finished:
            self._unfollow(session, task_id)
        else:
            session.release(task_id, keep_following=session in self.routes.get(task_id, ()),
                            newer_than_s=snapshot["time"])

    async def cancel(self, session: Session, request: protocol.Cancel) -> None:
        self.counters.cancels_total += 1
        task_id = request.id
        record = await self._owned_record(session, task_id, request.ref)
        if record is None:
            return
        if record.status.is_terminal:
            self._error(session, f"task {task_id} already finished ({record.status.value}); nothing to cancel",
                        request.ref)
            return
        if task_id not in session.follows:
            self._follow(session, task_id, held=False)  # so that the CANCELLED push reaches this session
        try:
            outcome = await asyncio.to_thread(cancel_task, self.platform, task_id)
        except (MeetingTasksError, redis.RedisError) as exc:
            self._error(session, f"cancel of {task_id} failed: {exc}", request.ref)
            return
        if outcome.is_terminal and outcome is not Status.CANCELLED:
            self._error(session, f"task {task_id} already finished ({outcome.value}); nothing to cancel",
                        request.ref)

    async def _owned_record(self, session: Session, task_id: str, ref: protocol.Ref) -> StatusRecord | None:
        try:
            record: StatusRecord | None = await asyncio.to_thread(self.dispatcher.record, task_id)
        except TaskNotFound:
            record = None
        except redis.RedisError as exc:
            self._error(session, f"cannot read task {task_id} now ({exc})", ref)
            return None
        if record is None or record.fields.get("client") != session.client.id:
            self._error(session, f"no task {task_id!r} for client {session.client.id!r}", ref)
            return None
        return record

    # --- status events --------------------------------------------------------------------------------------
    def on_status(self, event: dict[str, Any]) -> None:
        """Route one event of the status channel to the sessions following its task."""
        task_id = event.get("id")
        if not isinstance(task_id, str):
            return
        followers = self.routes.get(task_id)
        if followers:
            frame = protocol.status(event, keyring(self.platform.settings))
            for session in followers:
                session.deliver(task_id, frame)
            self.counters.pushes_total += len(followers)
        if event.get("status") in TERMINAL_NAMES:
            if followers is not None:
                for session in followers:
                    if session.follows.get(task_id, "absent") is LIVE:
                        del session.follows[task_id]
                del self.routes[task_id]
                self.counters.tasks_followed = len(self.routes)
            owner = self.owners.pop(task_id, None)
            if owner is not None:
                owner.unfinished.discard(task_id)
                self._drop_if_idle(owner)

    async def reconcile(self) -> int:
        """After the status feed was down: push the current status of every followed task that changed
        meanwhile (terminal ones at least), so no client waits forever. Returns how many were pushed."""
        task_ids = list(set(self.routes) | set(self.owners))
        pushed = 0
        for task_id in task_ids:
            try:
                record = await asyncio.to_thread(self.dispatcher.record, task_id)
            except (TaskNotFound, redis.RedisError):
                continue
            if record.status.is_terminal:
                self.on_status(protocol.snapshot_event(record))
                pushed += 1
        return pushed

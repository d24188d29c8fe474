"""kombu's Redis transport, made reliable and fast for the platform's workers.

Stock kombu fetches with ``BRPOP`` and records the message in the unacked hash in a second call: a worker
that dies (or a connection that drops) between the two loses the message. It then acks each message with
a pipeline on a freshly built client. Our channel instead:

* **fetches with one Lua call** (:data:`FETCH`): pops up to the free prefetch slots from the service's
  queues in strict priority order and, atomically with the pop, records each message as unacked (kombu's
  own hash/index format, so kombu's restore sweep and our lease renewer work unchanged), counts its
  delivery and reads its cancel flag (both in its status record) and records STARTED there (the worker
  hands a fetched message to a free pool slot at once). The results ride to the task as ``mt_fetch_*`` headers;
* **acks in batches**: an ack is buffered and applied by the next fetch call (or at once when the channel
  is idle), and so is the terminal status of a task that ran in this process (see
  :mod:`meetingtasks.worker.outcomes`): a busy worker spends one round trip per batch of tasks on fetching,
  recording outcomes and acking together;
* **waits without popping** when the queues are empty: a ``BRPOP`` on the service's wake list only, where every
  platform producer pushes a token in the same transaction as its message; the woken worker then fetches. The
  wait does not watch the task queues: with two idle workers, Redis hands the token to one and, serving the keys in
  the order they became ready, the message itself to the other (``tests/test_idle_wait.py``), which would take it
  with kombu's two-step pop-then-record. A message pushed without a token (a foreign producer) is taken by the
  next fetch instead, at most :data:`IDLE_POLL_S` later. Every message is so taken by the atomic fetch;
* **dead-letters garbage** (not JSON, not an envelope, over the size limit, a field of the wrong type: see
  :func:`meetingtasks.core.message.check_envelope`, run on every message before kombu and Celery see it) with its
  raw bytes and the reason instead of crashing the worker as stock kombu does, and keeps consuming. The fetch
  script never fails after its pop, whatever a message holds; what it recorded and the worker then refuses
  loses its lease in the transaction that files the dead letter (:data:`UNRECORD`). The restore sweep
  dead-letters an unacked entry it cannot restore instead of stopping at it (``QoS.restore_by_tag``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import redis
from celery.worker import state as worker_state
from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import loads as kombu_json_loads
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from meetingtasks.core import kombu_json
from meetingtasks.core.loop import Loop
from meetingtasks.core.message import MalformedMessage, check_envelope, loads, strip_fetch_headers
from meetingtasks.core.priority import PRIORITY_ORDER, parse_queue
from meetingtasks.core.sentinel import SentinelUrl
from meetingtasks.lua import LuaScript
from meetingtasks.store import connections
from meetingtasks.store.cancel import CANCEL_RECHECK_S
from meetingtasks.store.connections import WRITES_REFUSED, new_client
from meetingtasks.store.platform import Platform
from meetingtasks.store.resp import pack_command
from meetingtasks.store.rollup import WRITE_INTERVAL_S, PendingCounts
from meetingtasks.store.status import Status
from meetingtasks.store.wake import push_wake
from meetingtasks.worker.hub import quiet
from meetingtasks.worker.loops import add_held_source, held_delivery_tags
from meetingtasks.worker.outcomes import (
    DEFERRED_START,
    ChildOutcomes,
    register_child_sink,
    register_sink,
    sink_for,
    unregister_sink,
)
from meetingtasks.worker.pacing import PoolPacing
from meetingtasks.worker.quarantine import REFUSED_TAG_PREFIX, file_refused, file_unrestorable, quarantine_raw
from meetingtasks.worker.task_events import BATCH_ROUTING_KEY, LISTENERS

log = logging.getLogger(__name__)

#: The worker's fetch: applies buffered outcomes and acks, pops, records (header of lua/fetch.lua; its flat reply is
#: decoded where it is read below).
FETCH = LuaScript.load("fetch")
#: Puts fetched messages this worker will not run back at the head of their queues (lua/give_back.lua).
GIVE_BACK = LuaScript.load("give_back")
#: Undoes fetch's unacked entry of a message the worker refuses, with its dead letter (lua/unrecord.lua).
UNRECORD = LuaScript.load("unrecord")

#: An idle worker fetches at least this often (s): its wait watches only the wake list, so this bounds how long a
#: message pushed without a wake token waits at an idle worker.
IDLE_POLL_S = 1.0

#: Most messages a solo worker takes in one fetch, however quick its tasks.
SOLO_BATCH_MAX = 16

#: A solo worker prefetches its next batch only when a batch holds at least this many tasks (each runs in under an
#: eighth of the budget): there the fetch's round trip is a large share of the batch's time, and the prefetched
#: batch holds about half a budget of work, so a critical task waits at most one and a half budgets for it. With
#: slower tasks the prefetch would save little and double the wait.
PREFETCH_MIN_BATCH = 4

#: A prefork or threads worker's reserve is refilled when down to 1/this of its size (and at one message left when
#: it holds fewer than four): each refill fetches the other three quarters in one script call. The quarter left
#: covers the refill's round trip (a quarter budget of work, 1 ms by default, against a fetch's few hundred
#: microseconds), and the last message left covers it for a small reserve of slow tasks, whose processes may free
#: while the refill is on its way. Refilled at half, a prefork (1) drain made about twice the fetches, and the
#: script's work per call (the acks, the counters, the reply) showed in Redis's CPU per task.
RESERVE_REFILL_DIVISOR = 4

_inline_pool = False
_reserve_slots = 0
_reserve_in_process = False
_pipeline_max = 1


def use_inline_pool(inline: bool) -> None:
    """Tell this process's consuming channels whether tasks run inline in the consumer (Celery's solo pool):
    only then is a fetch allowed more messages than the pool has free slots (see ``Channel._after_fetch``)."""
    global _inline_pool
    _inline_pool = inline


def use_reserve(processes: int, *, in_process: bool = False, pipeline: int = 1) -> None:
    """Tell this process's consuming channels that a prefork or threads pool of ``processes`` processes (threads) runs
    the tasks: each channel then keeps fetched messages in reserve for them (see the reserve's section in ``Channel``);
    0 turns the reserve off. ``in_process``: the pool runs the tasks in this process (threads), so a reserved task
    records its own STARTED through the channel's buffer when it runs, as a solo batch's does. ``pipeline``: how many
    jobs a pool process can hold at most, the one it runs included (see meetingtasks.worker.pool)."""
    global _reserve_slots, _reserve_in_process, _pipeline_max
    _reserve_slots = max(0, processes)
    _reserve_in_process = in_process
    _pipeline_max = max(1, pipeline)


@dataclass(slots=True)
class _Held:
    """A fetched message in a prefork worker's reserve: recorded unacked (leased, renewed), not given to Celery."""

    queue: str
    item: bytes
    payload: dict[str, Any]
    deliveries: int
    since: float  # monotonic time of its fetch
    flags_read_at: float  # monotonic time its cancel flag was last read (by the fetch, then see CANCEL_RECHECK_S)


#: How long a deferred STARTED may wait in the buffer before a timer applies it (its task runs long).
START_FLUSH_S = 0.025


class _EarlyFlags:
    """An ``MGET`` of a solo batch's cancel flags sent as the batch starts and read when a message first needs a
    fresher flag than its fetch's (see CANCEL_RECHECK_S): by then its reply has arrived, so the recheck costs no wait
    for a round trip (it used to block the consumer on one per batch). Its flags count as read when it was sent."""

    __slots__ = ("client", "conn", "ids", "sent_at")

    def __init__(self, client: Any, ids: list[str], keys: list[str]) -> None:
        self.client = client
        self.ids = ids
        self.conn: Any = client.connection_pool.get_connection("MGET")
        self.sent_at = time.monotonic()  # before the send: the flags are at least this fresh
        try:
            self.conn.send_command("MGET", *keys)
        except BaseException:
            self.release(broken=True)
            raise

    def read(self) -> set[str]:
        """The task ids whose flag was set; raises what the connection raises (the caller falls back)."""
        try:
            flags = self.client.parse_response(self.conn, "MGET")
        except BaseException:
            self.release(broken=True)
            raise
        self.release()
        return {task_id for task_id, flag in zip(self.ids, flags, strict=True) if flag is not None}

    def release(self, broken: bool = False) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        if broken:
            with suppress(Exception):
                conn.disconnect()  # a reply may be left unread on it: never reused as it is
        self.client.connection_pool.release(conn)


def stale_start_flusher(service: str) -> Loop:
    """A timer that makes a long task fetched in a solo worker's batch show as STARTED while it runs: the
    consumer is busy running it, so its buffered STARTED would otherwise wait for the task to end. In a prefork or
    threads worker it writes what an idle consumer kept for an ack that did not follow (see buffer_outcome)."""

    def flush() -> None:
        sink = sink_for(service)
        if isinstance(sink, Channel):
            sink.flush_stale_starts(START_FLUSH_S)

    return Loop(f"start-flusher-{service}", START_FLUSH_S, flush)


def counts_writer(service: str) -> Loop:
    """A timer that writes the traffic counts no fetch carried for :data:`WRITE_INTERVAL_S`: a pool busy with long
    tasks fetches nothing meanwhile, and their starts would otherwise reach ``top`` and the charts when one ends."""

    def write() -> None:
        sink = sink_for(service)
        if isinstance(sink, Channel):
            sink.write_due_counts()

    return Loop(f"counts-writer-{service}", WRITE_INTERVAL_S, write)


# Outcomes and acks that a channel could not apply before it closed (its connection failed): the next channel of
# the same service that fetches or flushes applies them, so a finished task is not left unacked (and run again once
# its lease runs out) only because the connection it was fetched on is gone. Keyed by service.
_orphans_lock = threading.Lock()
_orphans: dict[str, tuple[list[str], list[list[str]]]] = {}


def _leave_orphans(service: str, acks: list[str], outcomes: list[list[str]]) -> None:
    if not acks and not outcomes:
        return
    with _orphans_lock:
        old_acks, old_outcomes = _orphans.get(service, ([], []))
        _orphans[service] = (old_acks + acks, old_outcomes + outcomes)
    sink = sink_for(service)
    if isinstance(sink, Channel) and sink._mt_waiting:
        sink.flush_acks()  # idle: no fetch is coming soon to carry them


# Messages a warm shutdown left with the pool, to settle once it has drained (see QoS.restore_unacked). By service.
_unsettled: dict[str, list[str]] = {}


def _leave_unsettled(service: str, tags: list[str]) -> None:
    with _orphans_lock:
        _unsettled.setdefault(service, []).extend(tags)


def _orphan_tags() -> list[str]:
    """Held too: an orphaned ack's message stays leased until the ack is applied (see ``held_delivery_tags``)."""
    with _orphans_lock:
        return [tag for acks, _ in _orphans.values() for tag in acks]


#: The rest of a solo batch as (FETCH reply, index of the first message not handed to Celery yet).
_NO_REST: tuple[list[Any], int] = ([], 0)


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """Acks are buffered and applied by the channel's next fetch; fetched messages are recorded already."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        if self.channel.take_recorded(delivery_tag):
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def can_consume(self) -> bool:
        if _reserve_slots and self.channel.platform is not None:
            return bool(self.channel.reserve_wants_more())
        return bool(super().can_consume())

    def can_consume_max_estimate(self) -> int | None:
        if _reserve_slots and self.channel.platform is not None:
            return int(self.channel.reserve_room())
        estimate: int | None = super().can_consume_max_estimate()
        return estimate

    def ack(self, delivery_tag: Any) -> None:
        self.channel.buffer_ack(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)
        self.channel.release_held_soon(delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """A hand-back (Celery's ``Reject``, e.g. a bookkeeping write that Redis kept refusing past the grace) that
        Redis refuses too leaves the message as it is: in the unacked set, no longer renewed, so the restore sweep
        brings it back once its lease runs out. kombu removes and requeues in one transaction, so a refused
        hand-back changes nothing in Redis; raising instead would kill the worker (Celery only catches connection
        errors there)."""
        try:
            super().reject(delivery_tag, requeue=requeue)
        except RedisError as exc:
            log.warning("could not hand message %s back (%s); the restore sweep will once its lease ends",
                        delivery_tag, exc)
            virtual.QoS.ack(self, delivery_tag)  # forgotten here only: not held, not renewed
        self.channel.release_held_soon(delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        """kombu's restore sweep (a timer), which logs a traceback per tick when Redis refuses its writes: one line
        per episode instead. A refused sweep restores nothing (its transaction aborts); the next tick tries again."""
        try:
            result = super().restore_visible(*args, **kwargs)
        except RedisError as exc:
            if not getattr(self, "_mt_sweep_failing", False):
                log.warning("restore sweep: %s; retrying every tick", exc)
            self._mt_sweep_failing = True
            return None
        self._mt_sweep_failing = False
        return result

    def restore_unacked(self, client: Any = None) -> Any:
        """At channel close, put back what was delivered and not acked, except the messages this worker still
        holds: after a lost connection Celery lets their tasks run on and acks them later, and the lease
        renewer keeps their leases, so putting them back would run them twice. (A worker that dies leaves
        them to the restore sweep.)"""
        held = set(held_delivery_tags())
        for tag in [t for t in self._delivered if str(t) in held]:
            self._delivered.pop(tag, None)
        if worker_state.should_stop is not None and self._delivered:
            # A warm shutdown: Celery has forgotten what it handed to the pool and not seen start (it cleared its
            # reserved requests), yet the pool may still run it while it drains. Putting such a message back now
            # would run it twice; it stays leased until the pool has drained (see restore_unsettled).
            _leave_unsettled(self.channel.service, [str(tag) for tag in self._delivered])
            self._delivered.clear()
        self._mt_at_close = True
        try:
            return super().restore_unacked(client)
        finally:
            self._mt_at_close = False

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        """kombu's restore of one unacked entry, except that an entry it cannot restore (its stdlib json cannot
        read it, or the message is not an envelope) is dead-lettered with its raw bytes in the same transaction
        instead of raising out of the sweep, which stopped it at that entry, every time, for every entry behind
        it, or being dropped with a log line."""

        def restore_transaction(pipe: Any) -> None:
            entry = pipe.hget(self.unacked_key, tag)
            started = self._started_here(pipe, entry) if entry and getattr(self, "_mt_at_close", False) else None
            pipe.multi()
            if started is not None:
                self._unstart(pipe, *started)
            self._remove_from_indices(tag, pipe)
            if not entry:
                return
            platform = self.channel.platform
            if platform is not None and _text(tag).startswith(REFUSED_TAG_PREFIX):
                file_refused(platform, pipe, self.channel.service, _text(tag), entry)
                return
            restorable = _restorable(entry)
            if isinstance(restorable, str):
                if platform is None:
                    raise MalformedMessage(f"cannot restore unacked entry {tag!r}: {restorable}")
                file_unrestorable(platform, pipe, self.channel.service, _text(tag), entry, restorable)
                return
            message, exchange, routing_key = restorable
            self.channel._do_restore_message(message, exchange, routing_key, pipe, leftmost)

        with self.channel.conn_or_acquire(client) as conn:
            conn.transaction(restore_transaction, self.unacked_key)

    def _started_here(self, pipe: Any, entry: bytes | str) -> tuple[str, int, dict[str, Any]] | None:
        """``(task id, attempt, identity)`` of a message put back at close whose STARTED this worker recorded: the
        pool never ran it (Celery's warm shutdown discards what the pool has not taken; running ones are held, not
        restored), so its record must not go on reading STARTED while it waits on its queue. Watches the record."""
        platform = self.channel.platform
        restorable = _restorable(entry)
        if platform is None or isinstance(restorable, str):
            return None
        headers = restorable[0].get("headers") or {}
        task_id = headers.get("id")
        if not isinstance(task_id, str):
            return None
        status_key = platform.keys.status(task_id)
        pipe.watch(status_key)
        status, worker, kind, service, priority = pipe.hmget(status_key, "status", "worker", "type", "service",
                                                            "priority")
        if status != Status.STARTED.value.encode() or worker != _worker_name().encode():
            return None
        retries = headers.get("retries")
        identity = {"type": _text(kind or b""), "service": _text(service or b""), "priority": _text(priority or b"")}
        return task_id, (retries if isinstance(retries, int) else 0) + 1, identity

    def _unstart(self, pipe: Any, task_id: str, attempt: int, identity: dict[str, Any]) -> None:
        platform = self.channel.platform
        assert platform is not None
        platform.status.transition(pipe, task_id, Status.QUEUED, attempt=attempt, fields=identity)


def _restorable(entry: bytes | str) -> tuple[dict[str, Any], str, str] | str:
    """``(message, exchange, routing key)`` of an unacked entry as kombu's restore reads it (its own json), or
    why it cannot be restored: what kombu's ``_do_restore_message`` needs of it, checked before it runs."""
    try:
        parsed = kombu_json_loads(entry.decode() if isinstance(entry, bytes) else entry)
    except Exception as exc:
        # Whatever kombu's json and its object hooks raise (the decimal and bytes hooks' own errors, RecursionError
        # on deep nesting), the entry is refused: raising here would stop the sweep at this entry, every time.
        return f"not JSON: {type(exc).__name__}: {exc}"
    if not isinstance(parsed, list) or len(parsed) != 3:
        return "not a [message, exchange, routing key] triple"
    message, exchange, routing_key = parsed
    if not isinstance(message, dict):
        return "the message is not an object"
    props = message.get("properties")
    if not isinstance(props, dict) or not isinstance(props.get("delivery_info", {}), dict):
        return "the message has no 'properties' object with a 'delivery_info' object"
    if not isinstance(message.get("headers", {}), dict):
        return "the message's 'headers' is not an object"
    if not isinstance(props.get("priority", 0), int):
        return "the message's properties.priority is not an integer"
    if not isinstance(exchange, str) or not isinstance(routing_key, str) or not routing_key:
        return "the exchange or routing key is not a string"
    return message, exchange, routing_key


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS
    # Refusals met inside kombu's scripts and transactions surface as the refusal they are (see connections).
    connection_class = connections.Connection
    connection_class_ssl = connections.SSLConnection

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = super()._connparams(asynchronous)
        cls = params["connection_class"]
        if issubclass(cls, redis.UnixDomainSocketConnection):  # a unix socket URL: kombu names redis-py's class
            params["connection_class"] = connections.with_refusals_as_they_are(cls)
        return params

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._mt_lock = threading.Lock()
        self._mt_acks: list[str] = []
        self._mt_outcomes: list[list[str]] = []
        self._mt_sent_outcomes: list[list[str]] = []
        self._mt_sink = False
        self._mt_recorded: set[str] = set()
        self._mt_idle = False
        self._mt_waiting = False
        self._mt_sent_acks: list[str] = []
        # The traffic counts the fetches handed back (see PendingCounts), and those the fetch in flight carries.
        self._mt_counts = PendingCounts()
        self._mt_sent_counts: list[Any] = []
        self._mt_sync_client: Any = None
        # Monotonic time of the oldest buffered deferred STARTED (or an outcome waiting for its ack, see buffer_outcome)
        self._mt_start_pending_at: float | None = None
        self._mt_batch = SOLO_BATCH_MAX  # the next fetch's size when tasks run inline (see _after_fetch)
        self._mt_rest = _NO_REST  # the batch messages not handed to Celery yet: held, their leases renewed
        self._mt_held: list[_Held] = []  # a prefork worker's reserve (see _hold)
        self._mt_solo_task_s = 0.0  # how long a solo task takes, as _after_fetch estimates it (see _send_early_flags)
        self._mt_loop_thread: int | None = None  # the consumer's thread (see release_held_soon)
        self._mt_pacing_now: PoolPacing | None = None  # reserve mode: see _mt_pacing
        # A solo worker's next fetch, sent before its batch runs (see _prefetch): whether its reply is still unread,
        # and when the batch that it overlaps began. The lock orders the consumer with the start flusher's thread,
        # which gives a prefetched batch back when the running one overruns.
        self._mt_prefetched = False
        self._mt_expect_reply = False
        self._mt_batch_began: float | None = None
        self._mt_fetch_sent_at = 0.0
        self._mt_prefetch_lock = threading.Lock()
        self._mt_queues: list[str] = []
        self._mt_closed = False
        self._mt_refusals = 0  # fetches Redis refused in a row (see _refused)
        self._mt_flush_failing = False
        super().__init__(*args, **kwargs)
        # Kept here: after a lost connection Celery detaches the transport (``client = None``) before it closes
        # the channel, and the close (restore) and the late acks of running tasks still come through us.
        self._mt_options: dict[str, Any] = dict(self.connection.client.transport_options)

    # --- platform context ------------------------------------------------------------------------------------
    @property
    def platform(self) -> Platform | None:
        platform: Platform | None = self._mt_options.get("mt_platform")
        return platform

    @property
    def service(self) -> str:
        return str(self._mt_options["mt_service"])

    # --- one client per channel, not one per call (stock kombu builds one for every ack) -------------------
    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Any:
        if client:
            yield client
            return
        if self._mt_sync_client is None:
            self._mt_sync_client = self._new_sync_client()
        yield self._mt_sync_client

    def _new_sync_client(self) -> Any:
        if self.connection.client:
            try:
                return self._create_client()
            except AttributeError:
                # Detached meanwhile (Celery drops the transport's client on a lost connection, from the consumer's
                # thread): kombu's pool, gone with the closed pools, cannot be built again without it. Seen in a
                # Sentinel failover, where the close and a flush from another thread met.
                pass
        return self._detached_client()

    def _detached_client(self) -> Any:
        """A client for a channel whose transport is detached (kombu's pool needs it), so that its restore
        and acks reach Redis, or fail as connection errors rather than AttributeError (which kills the worker)."""
        platform = self.platform
        if platform is None:
            raise RedisConnectionError("the broker connection is closed")
        return new_client(platform.settings.broker_url(self.service), platform.settings)

    def close(self) -> None:
        if self._mt_prefetched:
            try:
                self._give_back_prefetched()
            except Exception as exc:  # left leased: the restore sweep brings them back
                log.warning("could not give back the prefetched batch at close (%s)", exc)
        if self._mt_held:
            held, self._mt_held = self._mt_held, []
            try:
                self._give_back_held(held)
            except Exception as exc:  # they stay leased, and nobody renews them: the restore sweep brings them back
                log.warning("could not give back %d reserved messages at close (%s)", len(held), exc)
        _channels.pop(id(self), None)
        if self._mt_sink:
            unregister_sink(self.service, self)
            self._mt_sink = False
        try:
            super().close()  # applies the buffers if Redis answers (see _close_clients)
        finally:
            with self._mt_lock:
                self._mt_closed = True
                acks, self._mt_acks = self._mt_sent_acks + self._mt_acks, []
                outcomes, self._mt_outcomes = self._mt_sent_outcomes + self._mt_outcomes, []
                self._mt_sent_acks, self._mt_sent_outcomes = [], []
                self._mt_rest = _NO_REST
            if self._mt_options.get("mt_service"):
                _leave_orphans(self.service, acks, outcomes)

    def _close_clients(self) -> None:
        self.flush_acks()
        self._mt_sync_client = None
        super()._close_clients()

    # --- acks --------------------------------------------------------------------------------------------------
    def take_recorded(self, delivery_tag: Any) -> bool:
        tag = str(delivery_tag)
        if tag in self._mt_recorded:
            self._mt_recorded.discard(tag)
            return True
        return False

    def buffer_ack(self, delivery_tag: Any) -> None:
        with self._mt_lock:
            closed = self._mt_closed
            if not closed:
                self._mt_acks.append(str(delivery_tag))
            idle = self._mt_waiting
        if closed:  # a task that ran on after its connection failed: the channel that consumes now applies it
            _leave_orphans(self.service, [str(delivery_tag)], [])
            return
        if idle:
            # No fetch is coming soon to carry the ack (the channel waits for work): apply it now.
            self.flush_acks()

    def buffer_outcome(self, entry: list[str]) -> None:
        """Take a task's terminal status (:func:`meetingtasks.worker.outcomes.outcome_entry`) to apply with the
        acks: before its own ack, which its task sends after this."""
        with self._mt_lock:
            closed = self._mt_closed
            if not closed:
                self._mt_outcomes.append(entry)
                if entry[1] == "STARTED" and self._mt_start_pending_at is None:
                    self._mt_start_pending_at = time.monotonic()
            idle = self._mt_waiting
            # A reserve worker's consumer waits idle while its pool runs the last tasks, and the ack of a task comes
            # right after its outcomes (from the thread that ran it; in a prefork parent, from the same result
            # callback): that ack's flush carries them too, so that no reader sees the task ended with its message
            # still unacked (and a short task's STARTED goes in the same write). Should no ack come, the start
            # flusher writes them (the time set below).
            with_ack = idle and _reserve_slots > 0
            if with_ack and self._mt_start_pending_at is None:
                self._mt_start_pending_at = time.monotonic()
        if closed:
            _leave_orphans(self.service, [], [entry])
            return
        if idle and not with_ack:
            self.flush_acks()

    def write_due_counts(self) -> None:
        """Write the pending traffic counts if no fetch has carried them for an interval (see counts_writer)."""
        with self._mt_lock:
            due = self._mt_counts.due() and not self._mt_closed
        if due:
            self.flush_acks()

    def flush_stale_starts(self, age_s: float) -> None:
        """Apply the buffer now if a deferred STARTED has waited in it longer than ``age_s``: its task is
        running longer than a batch should take, and watchers should see it running (called from a timer
        thread while the consumer runs the task)."""
        since = self._mt_start_pending_at
        if since is not None and time.monotonic() - since > age_s:
            self.flush_acks()
        platform = self.platform
        if self._mt_prefetched and platform is not None:
            try:
                # A long task runs: its batch's successor goes back meanwhile.
                self._give_back_prefetched(overrun_s=max(age_s, platform.settings.solo_batch_ms / 1000))
            except Exception as exc:
                log.warning("could not give the prefetched batch back (%s)", exc)

    def flush_acks(self) -> bool:
        """Apply the buffered outcomes and acks now (the channel is idle or closing). False if Redis did not take
        them (they are kept for the next try)."""
        if self.platform is None:
            return True
        with self._mt_lock:
            if _orphans and not self._mt_closed:
                self._adopt_orphans()
            acks, self._mt_acks = self._mt_acks, []
            outcomes, self._mt_outcomes = self._mt_outcomes, []
            counts = self._mt_counts.take() if self._mt_counts else []
            self._mt_start_pending_at = None
        if not acks and not outcomes and not counts:
            return True
        try:
            with self.conn_or_acquire() as client:
                apply_buffers(self.platform, client, [self.unacked_key, self.unacked_index_key],
                              self._script_args(0, 0, acks, outcomes, counts=counts))
        except (RedisError, *self.connection_errors) as exc:
            # Unreachable, or refusing writes for a while (out of memory, a read-only replica): kept for the next
            # call that gets through. Meanwhile the messages stay unacked and leased (held_delivery_tags): if this
            # worker dies first, the restore sweep redelivers them and they run again.
            self._keep_unsent(acks, outcomes)
            self._keep_unsent_counts(counts, exc)
            if not self._mt_flush_failing:
                log.warning("could not record %d outcomes and %d acks yet (%s); kept for the next try",
                            len(outcomes), len(acks), exc)
            self._mt_flush_failing = True
            return False
        if self._mt_flush_failing:
            self._mt_flush_failing = False
            log.info("recorded the kept outcomes and acks")
        return True

    def _adopt_orphans(self) -> None:
        """Take the buffers other channels of this service left behind, ahead of ours (they are older). Called
        with ``_mt_lock`` held."""
        with _orphans_lock:
            acks, outcomes = _orphans.pop(self.service, ([], []))
        self._mt_acks[:0] = acks
        self._mt_outcomes[:0] = outcomes

    def held_tags(self) -> list[str]:
        """Messages this channel fetched that are neither Celery's requests nor acked in Redis: the rest of the
        current solo batch, and those whose ack waits in the buffer."""
        with self._mt_lock:
            tags = [*self._mt_sent_acks, *self._mt_acks]
        tags += [str(h.payload["properties"]["delivery_tag"]) for h in list(self._mt_held)]
        reply, start = self._mt_rest
        for i in range(start, len(reply) - 4, 5):
            if int(reply[i + 2]) < 0:
                continue  # garbage, dead-lettered rather than run
            try:
                tags.append(str(loads(reply[i + 1])["properties"]["delivery_tag"]))
            except Exception:  # unreadable: the delivery path deals with it; nothing to renew
                continue
        return tags

    def _keep_unsent(self, acks: list[str], outcomes: list[list[str]]) -> None:
        if self._mt_closed:
            _leave_orphans(self.service, acks, outcomes)
            return
        with self._mt_lock:
            self._mt_acks[:0] = acks
            self._mt_outcomes[:0] = outcomes
            if self._mt_start_pending_at is None and any(entry[1] == "STARTED" for entry in outcomes):
                self._mt_start_pending_at = time.monotonic()

    def _keep_unsent_counts(self, counts: list[Any], exc: BaseException) -> None:
        """Counts a call carried and Redis did not take: kept for the next call, unless the connection failed, when
        the call may have written them (a count is lost then rather than written twice)."""
        if counts and not isinstance(exc, self.connection_errors):
            with self._mt_lock:
                self._mt_counts.put_back(counts)

    def _take_counts(self, reply: Any) -> Any:
        """The fetch ``reply`` without its tail (one element past its messages, see lua/fetch.lua): the receivers
        of its task events probe (see meetingtasks.worker.task_events) and the traffic counts it handed back,
        which join the pending ones."""
        if len(reply) % 5:
            receivers, *counts = reply[-1]
            if int(receivers) >= 0:
                LISTENERS.heard(int(receivers))
            if counts:
                with self._mt_lock:
                    self._mt_counts.add(counts)
            return reply[:-1]
        return reply

    def _script_args(self, limit: int, start_now: int, acks: list[str], outcomes: list[list[str]], *,
                     write_counts: bool = True, counts: list[Any] | None = None) -> list[Any]:
        platform = self.platform
        assert platform is not None
        return fetch_args(platform, limit, start_now, acks, outcomes, write_counts=write_counts, counts=counts,
                          probe=LISTENERS.probe() if limit else None)

    # --- fetching ----------------------------------------------------------------------------------------------
    def _brpop_start(self, timeout: float | None = None) -> None:
        platform = self.platform
        if platform is None:
            super()._brpop_start(timeout)
            return
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if not self._mt_sink:
            register_sink(self.service, self)
            self._mt_sink = True
            _channels[id(self)] = self
        self._in_poll = self.client.connection
        self._mt_loop_thread = threading.get_ident()  # kombu's hub calls this on the consumer's thread
        self._brpop_sent_at = time.monotonic()
        if self._mt_prefetched:
            return  # the fetch sent while the last batch ran is in flight: its reply is the one to read
        self._mt_queues = queues
        if self._mt_idle:
            self._mt_waiting = True
            self.flush_acks()
            wait_s = self.brpop_timeout if timeout is None else timeout
            wait_s = min(wait_s, IDLE_POLL_S) if wait_s else IDLE_POLL_S
            # The wake list instead of the task queues: a waiter that watched them could pop a task with plain
            # BRPOP. Other queues (Celery's control replies, which carry no task and get no token of their own) are
            # watched as stock kombu does.
            others = [q for q in queues if parse_queue(q) is None]
            keys = [platform.keys.wake(self.service), *others] if len(others) < len(queues) else others
            self._mt_expect_reply = True
            self.client.connection.send_command("BRPOP", *keys, wait_s)
            return
        self._mt_rest = _NO_REST
        self._mt_waiting = False
        room = self.qos.can_consume_max_estimate()
        limit = max(1, min(room if room is not None else 100, 100))
        start_now = limit  # each message goes to a free pool slot at once
        if _reserve_slots:
            # Only those for free pool processes start now; the rest wait in the reserve (see _hold).
            start_now = max(0, _reserve_slots - self._in_pool())
        if _inline_pool:
            # The consumer runs the tasks itself, one after the other (a solo pool's "concurrency" is only a
            # prefetch count): only the first starts now.
            limit = self._mt_batch if platform.settings.solo_batch_ms > 0 else 1
            start_now = 1
        self._send_fetch(queues, limit, start_now)

    def _send_fetch(self, queues: list[str], limit: int, start_now: int) -> None:
        """Send FETCH on the consuming connection, with the buffered outcomes and acks (kept as sent until the reply
        says they were applied)."""
        with self._mt_lock:
            if _orphans:
                self._adopt_orphans()
            self._mt_sent_acks, self._mt_acks = self._mt_acks, []
            self._mt_sent_outcomes, self._mt_outcomes = self._mt_outcomes, []
            self._mt_start_pending_at = None
            if _reserve_in_process:
                self._mt_sent_outcomes, self._mt_outcomes = _hold_back_starts(self._mt_sent_outcomes)
                if self._mt_outcomes:
                    oldest = min(float(entry[2]) for entry in self._mt_outcomes)
                    self._mt_start_pending_at = time.monotonic() - max(0.0, time.time() - oldest)
            # The counts are written once an interval, by the fetch that carries them; the others hand theirs back.
            write_counts = self._mt_counts.due()
            self._mt_sent_counts = self._mt_counts.take() if write_counts else []
        args = self._script_args(limit, start_now, self._mt_sent_acks, self._mt_sent_outcomes,
                                 write_counts=write_counts, counts=self._mt_sent_counts)
        self._mt_fetch_sent_at = time.monotonic()  # its reply's cancel flags are at least this fresh
        # The platform's one encoder (hiredis) packs the call (a hundred short arguments with a full batch of acks
        # and outcomes) about nine times faster than Python code encoding argument by argument.
        platform = self.platform
        assert platform is not None
        command = ("EVALSHA", FETCH.sha, 3 + len(queues), self.unacked_key, self.unacked_index_key,
                   platform.keys.wake(self.service), *queues, *args)
        self._mt_expect_reply = True
        self.client.connection.send_packed_command([pack_command(command)])

    def _brpop_read(self, **options: Any) -> bool:
        platform = self.platform
        if platform is None:
            return bool(super()._brpop_read(**options))
        waiting = self._mt_waiting
        try:
            try:
                with self._mt_prefetch_lock:
                    if not self._mt_expect_reply:
                        raise virtual.Empty()  # the start flusher read the prefetched reply and gave its batch back
                    self._mt_expect_reply = self._mt_prefetched = False
                    reply = self.client.parse_response(self.client.connection, "BRPOP" if waiting else "EVALSHA")
                    replica_acks = platform.replica_acks
                    if replica_acks and (self._mt_sent_acks or self._mt_sent_outcomes):
                        # The fetch applied outcomes and acks: confirmed by replicas before anything else runs.
                        self.client.connection.send_command(*replica_acks.command)
                        # A refused WAIT only tells (the fetch ran): the batch it took runs all the same. Dropped,
                        # it would wait leased for the restore sweep, and with its applied acks sent again the next
                        # fetch's WAIT would be refused too.
                        replica_acks.note(replica_acks.reply_on(self.client.connection), "task outcomes and acks")
            except virtual.Empty:
                raise
            except NoScriptError:
                self._requeue_sent_acks()
                with self.conn_or_acquire() as client:
                    client.script_load(FETCH.source)
                raise virtual.Empty() from None
            except WRITES_REFUSED as exc:  # before connection_errors, which holds them too: wait, not reconnect
                self._refused(exc)
                raise virtual.Empty() from None
            except self.connection_errors:
                self._mt_sent_counts = []  # perhaps written: lost rather than counted twice
                self._requeue_sent_acks()
                self.client.connection.disconnect()
                raise
            except RedisError as exc:
                self._refused(exc)
                raise virtual.Empty() from None
            if self._mt_refusals:
                self._mt_refusals = 0
                log.info("Redis takes the fetches again")
            if waiting:
                return self._after_wait(reply)
            return self._after_fetch(reply)
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _refused(self, exc: RedisError) -> None:
        """Redis answered the fetch (or the wait) with an error instead: out of memory, a read-only replica during
        a failover, a busy script, an unblocked wait. Nothing was taken: a script that fails at its first write
        writes nothing, and a refused BRPOP pops nothing. Keep the buffers, pause briefly, and fetch again,
        without killing the worker (stock kombu lets the error end the consumer)."""
        self._requeue_sent_acks()
        self._mt_waiting = False
        self._mt_idle = False
        if not self._mt_refusals:
            log.warning("Redis refused the fetch (%s); retrying with backoff", exc)
        self._mt_refusals += 1
        time.sleep(min(0.05 * 2 ** min(self._mt_refusals, 5), 1.0))

    def _requeue_sent_acks(self) -> None:
        acks, outcomes, counts = self._mt_sent_acks, self._mt_sent_outcomes, self._mt_sent_counts
        self._mt_sent_acks = []
        self._mt_sent_outcomes = []
        self._mt_sent_counts = []
        self._keep_unsent(acks, outcomes)
        if counts:  # the call did not run (a refusal, a missing script): nothing of it was written
            with self._mt_lock:
                self._mt_counts.put_back(counts)

    def _after_wait(self, reply: Any) -> bool:
        self._mt_waiting = False
        if not reply:
            self._mt_idle = False  # the wait timed out: look again (restored messages carry no token)
            raise virtual.Empty()
        key, item = reply
        key = key.decode() if isinstance(key, bytes) else key
        self._mt_idle = False
        if self.platform is not None and key == self.platform.keys.wake(self.service):
            raise virtual.Empty()  # a token: the next fetch takes the work atomically
        # A message on a queue that is not a task queue (a control reply): kombu's two-step path.
        if not self.accept_item(key, item):
            raise virtual.Empty()
        self._queue_cycle.rotate(key)
        try:
            self.connection._deliver(_complete_delivery_info(strip_fetch_headers(loads(item)), key), key)
        except (RedisError, OSError):
            raise
        except Exception as exc:  # as in _after_fetch; kombu records the lease only once it holds the message
            self.refuse(key, item, f"kombu cannot deliver it: {type(exc).__name__}: {exc}", recorded=False)
            raise virtual.Empty() from None
        return True

    def _after_fetch(self, reply: Any) -> bool:
        """Hand the fetched messages to Celery.

        With an inline (solo) pool each delivery runs its task before returning, so a fetch of several messages
        is a batch the consumer works through. It is sized to take about half of ``solo_batch_ms`` (from how
        long the last one took per task); once a batch has run for ``solo_batch_ms`` and a message of a higher
        priority waits (see :meth:`_outranked`), the messages not yet run go back to the head of their queues, where
        the next fetch takes them in priority order again; with none waiting, the rest runs on for another budget.
        A critical task pushed meanwhile so waits at most that long, plus the task running at that moment."""
        self._mt_sent_acks = []
        self._mt_sent_outcomes = []
        self._mt_sent_counts = []
        reply = self._take_counts(reply)
        if not reply:
            self._mt_idle = True  # nothing popped: wait for a wake token
            raise virtual.Empty()
        reply = self._file_refused(reply)
        if not reply:
            raise virtual.Empty()  # all refused: more may wait, fetch again
        platform = self.platform
        assert platform is not None  # only platform channels fetch with FETCH
        batched = _inline_pool
        budget_s = platform.settings.solo_batch_ms / 1000
        began = self._mt_batch_began = time.monotonic()
        try:
            ran = self._run_batch(reply, began, batched, budget_s, platform)
        finally:
            with self._mt_prefetch_lock:  # see _give_back_prefetched
                self._mt_batch_began = None
            self._mt_rest = _NO_REST
        if _inline_pool and ran:
            # The estimate follows a slower batch at once and a quicker one by halves: one quick batch (a critical
            # task between slow low ones) would otherwise size the next fetch for several budgets of slow tasks,
            # held leased out of other workers' reach and run ahead of the next critical task.
            per_task_s = self._mt_solo_task_s = max((time.monotonic() - began) / ran, self._mt_solo_task_s / 2)
            # Sized to half the budget: a batch overruns (and pays a give-back) only when a task is really slower
            # than the last ones, not whenever the machine pauses the worker for a moment.
            target_s = budget_s / 2
            self._mt_batch = max(1, min(SOLO_BATCH_MAX, int(target_s / per_task_s) if per_task_s > 0 else 1))
        if not ran:
            raise virtual.Empty()
        return True

    def _file_refused(self, reply: Any) -> Any:
        """Dead-letter the messages the fetch refused (see FETCH) before any of the batch runs: their leases are
        not renewed (nothing of theirs runs), so one filed after a long task could meanwhile be filed by another
        worker's restore sweep too. Returns the rest of the reply."""
        if not any(int(reply[i + 2]) < 0 for i in range(0, len(reply), 5)):
            return reply
        rest: list[Any] = []
        for i in range(0, len(reply), 5):
            queue_b, item, deliveries, why, tag = reply[i:i + 5]
            if int(deliveries) < 0:
                self.refuse(_text(queue_b), item, _text(why), recorded=False, lease_tag=_text(tag))
            else:
                rest += reply[i:i + 5]
        return rest

    def _run_batch(self, reply: Any, began: float, batched: bool, budget_s: float, platform: Platform) -> int:
        """The body of :meth:`_after_fetch`: hand the messages over; how many went to Celery."""
        flags_read_at = self._mt_fetch_sent_at  # FETCH read each message's cancel flag after this (before a prefetch)
        if batched and budget_s > 0 and self._mt_batch >= PREFETCH_MIN_BATCH and len(reply) // 5 >= self._mt_batch:
            self._prefetch()  # a full batch: there is a backlog, so fetch the next batch while this one runs
        early = self._send_early_flags(reply, flags_read_at, batched)
        try:
            ran = self._hand_over(reply, began, batched, budget_s, platform, flags_read_at, early)
        finally:
            if early is not None and early.conn is not None:
                self._discard_early_flags(early)
        if self._mt_held and self._mt_pacing.pool_limit() > _reserve_slots:
            self.release_held()  # each process's next job goes into its pipe now (see meetingtasks.worker.pool)
        return ran

    def _hand_over(self, reply: Any, began: float, batched: bool, budget_s: float, platform: Platform,
                   flags_read_at: float, early: _EarlyFlags | None) -> int:
        ran = 0
        cancelled_since: set[str] = set()
        for i in range(0, len(reply), 5):
            queue_b, item, deliveries, cancelled, started = reply[i:i + 5]
            queue = queue_b.decode() if isinstance(queue_b, bytes) else queue_b
            if int(started) == DEFERRED_START and time.monotonic() - flags_read_at > CANCEL_RECHECK_S:
                flags = None
                if early is not None and early.conn is not None and \
                        time.monotonic() - early.sent_at <= CANCEL_RECHECK_S:
                    flags = self._read_early_flags(early)
                if flags is not None:
                    flags_read_at = early.sent_at  # type: ignore[union-attr]
                    cancelled_since = flags
                else:
                    flags_read_at = time.monotonic()
                    cancelled_since = self._cancelled_among(
                        [reply[j + 1] for j in range(i, len(reply), 5) if int(reply[j + 2]) >= 0])
            if batched and ran and time.monotonic() - began > budget_s:
                if self._outranked([_text(reply[j]) for j in range(i, len(reply), 5)]):
                    self._mt_rest = _NO_REST
                    # The prefetched batch first: each give-back goes to the head of its queues, and the rest of
                    # this batch is ahead of it in queue order.
                    self._give_back_prefetched()
                    self._give_back(reply[i:])
                    break
                began = time.monotonic()  # nothing of a higher priority waits: the rest runs on a new budget
            try:
                # The one check of the whole envelope before kombu and Celery touch it (see check_envelope).
                payload = strip_fetch_headers(check_envelope(item, platform.settings.max_message_bytes))
            except MalformedMessage as exc:
                self.refuse(queue, item, str(exc), recorded=True)
                continue
            _complete_delivery_info(payload, queue)
            if int(started) != -1:
                headers = payload.setdefault("headers", {}) or {}
                payload["headers"] = headers
                headers["mt_fetch_deliveries"] = int(deliveries)
                headers["mt_fetch_cancelled"] = int(cancelled) or int(headers.get("id") in cancelled_since)
                headers["mt_fetch_started"] = int(started)
                if not _reserve_in_process:
                    # When the flags were read: a task that waited longer reads its flag again as it starts
                    # (PlatformTask.execute). A threads pool gets a message only when a thread is free, so it waits
                    # in no queue behind another task and the flags read at most CANCEL_RECHECK_S before the
                    # hand-over stand (a prefork job may wait in a busy process's pipe; a solo batch's tasks wait
                    # behind each other). With 8 busy threads the freed one often took a few milliseconds to get
                    # the GIL, and reading the flag again cost a round trip for a third of a counting drain's
                    # tasks: 10-14% of its rate.
                    headers["mt_fetch_flags_at"] = _wall_time(flags_read_at)
            if _reserve_slots and self._in_pool() >= _reserve_slots:
                self._hold(_Held(queue, item if isinstance(item, bytes) else item.encode(), payload,
                                 int(deliveries), began, flags_read_at))
                continue
            self._mt_rest = (reply, i + 5)  # this one is Celery's request now; those behind it are held by us
            if self._hand_to_celery(payload, queue, item):
                ran += 1
        return ran

    def _send_early_flags(self, reply: Any, flags_read_at: float, batched: bool) -> _EarlyFlags | None:
        """Send the MGET of :class:`_EarlyFlags` for a solo batch whose messages will outlive their fetch's flags
        before the last of them starts (a prefetched batch, fetched a batch ago); None when none will."""
        if not batched or len(reply) < 10 or int(reply[4]) != DEFERRED_START:
            return None
        if time.monotonic() - flags_read_at + self._mt_solo_task_s * (len(reply) // 5) <= CANCEL_RECHECK_S:
            return None
        platform = self.platform
        assert platform is not None
        ids = _task_ids([reply[j + 1] for j in range(0, len(reply), 5) if int(reply[j + 2]) >= 0])
        if not ids:
            return None
        try:
            with self.conn_or_acquire() as client:
                return _EarlyFlags(client, ids, [platform.keys.cancel(task_id) for task_id in ids])
        except (RedisError, *self.connection_errors) as exc:  # the recheck reads them when needed instead
            log.debug("could not send the early cancel flag read (%s)", exc)
            return None

    def _read_early_flags(self, early: _EarlyFlags) -> set[str] | None:
        try:
            return early.read()
        except (RedisError, *self.connection_errors) as exc:  # read them now instead
            log.debug("could not read the early cancel flags (%s)", exc)
            return None

    def _discard_early_flags(self, early: _EarlyFlags) -> None:
        """Read the unneeded reply off its connection (it has arrived by now) so that the connection is reusable."""
        with suppress(RedisError, *self.connection_errors):
            early.read()
        early.release(broken=True)  # a no-op after a read; after a failed one, the connection was dropped

    def _outranked(self, queues: list[str]) -> bool:
        """Whether a message of a higher priority than the lowest among fetched messages not run yet (from
        ``queues``) waits in the queues now: only then does an overrun batch (or a stale prefork reserve) go back,
        for one EXISTS on the channel's own client instead of a give-back and the fetch that takes the same
        messages again. Asked again a budget later, so a message pushed meanwhile waits no longer than it did
        when every overrun gave the messages back."""
        last = len(PRIORITY_ORDER) - 1
        lowest = 0
        for queue in queues:
            parsed = parse_queue(queue)
            lowest = max(lowest, PRIORITY_ORDER.index(parsed[1]) if parsed is not None else last)
        above = []
        for queue in self._mt_queues:
            parsed = parse_queue(queue)
            if parsed is not None and PRIORITY_ORDER.index(parsed[1]) < lowest:
                above.append(queue)
        if not above:
            return False  # the messages are of the highest priority: nothing can be waiting ahead of them
        try:
            with self.conn_or_acquire() as client:
                return bool(client.exists(*above))
        except (RedisError, *self.connection_errors):
            return True  # cannot tell: give them back, as every overrun used to

    def _hand_to_celery(self, payload: dict[str, Any], queue: str, item: bytes | str) -> bool:
        """Deliver one fetched, checked message to Celery's consumer; False if kombu could not take it (then it has
        been dead-lettered)."""
        # A message from a prefork or threads worker's reserve keeps its deferred start: its task records STARTED
        # when it runs, as a solo batch's does, so that STARTED and the outcome are written as one (a prefork child
        # hands both to the parent with the result; a threads worker's fetch keeps the STARTED back until then; see
        # _hold_back_starts), or within START_FLUSH_S while it runs on.
        tag = payload["properties"]["delivery_tag"]
        self._mt_recorded.add(tag)
        if _reserve_slots:
            platform = self.platform
            budget_s = platform.settings.solo_batch_ms / 1000 if platform is not None else 0.0
            headers = payload.get("headers") or {}
            self._mt_pacing.handed(str(tag), str(headers.get("task")), self._in_pool(), budget_s)
        try:
            self.connection._deliver(payload, queue)
        except (RedisError, OSError):
            raise
        except Exception as exc:
            # kombu's own handling of the message failed before Celery's (which never raises: see
            # PlatformConsumer): a shape the envelope check let through. Raising would stop the worker.
            self._mt_recorded.discard(tag)
            self.refuse(queue, item, f"kombu cannot deliver it: {type(exc).__name__}: {exc}", recorded=True)
            return False
        return True

    # --- a prefork worker's reserve ------------------------------------------------------------------------------
    # With prefetch 1 a prefork worker fetched only when a task had ended and its process sat idle for the round trip
    # and the hand-over: the fetch never overlapped a run. So each channel keeps fetched messages in reserve, fetched
    # while the tasks run and handed to the pool the moment a process frees (on the ack of its last task): per pool
    # process about solo_batch_ms worth of tasks (from how long they run; at least one, at most SOLO_BATCH_MAX; see
    # meetingtasks.worker.pacing), refilled in one fetch when down to a quarter, so that quick tasks share fetches; a
    # refill's messages go ahead of reserved ones of a lower priority (see _hold). Strict priority is
    # kept within solo_batch_ms: a reserved message that has waited longer than that when a process frees goes back
    # to the head of its queue with the rest of the reserve if a message of a higher priority waits (see _outranked),
    # and the next fetch takes work in priority order again. A critical task pushed meanwhile so waits at most that
    # much longer than with no reserve.

    @property
    def _mt_pacing(self) -> PoolPacing:
        """The reserve's and the pipeline's sizes (the pool is known only once the consumer starts, after the
        channel exists)."""
        pacing = self._mt_pacing_now
        if pacing is None or pacing.processes != _reserve_slots or pacing.pipeline != _pipeline_max:
            pacing = self._mt_pacing_now = PoolPacing(_reserve_slots, _pipeline_max, SOLO_BATCH_MAX)
        return pacing

    def _in_pool(self) -> int:
        """Messages handed to Celery and not acked yet (kombu keeps acked ones in ``_delivered`` until it flushes)."""
        return len(self.qos._delivered) - len(self.qos._dirty)

    def reserve_room(self) -> int:
        """How many more messages this channel may fetch: one per free pool process, and the reserve's room."""
        pacing = self._mt_pacing
        return max(0, pacing.pool_limit() + _reserve_slots * pacing.reserve - self._in_pool() - len(self._mt_held))

    def reserve_wants_more(self) -> bool:
        """Fetch when a pool process is free, or when the reserve is down to its refill mark (see
        RESERVE_REFILL_DIVISOR): refilled in batches, so that one fetch (one round trip, one script call) serves
        several tasks."""
        if self.reserve_room() <= 0:
            return False
        size = _reserve_slots * self._mt_pacing.reserve
        return self._in_pool() < _reserve_slots or len(self._mt_held) <= max(1, size // RESERVE_REFILL_DIVISOR)

    def release_held_soon(self, delivery_tag: Any = None) -> None:
        """:meth:`release_held`, on the consumer's thread: a threads pool acks from the thread that ran the task,
        and only the consumer's thread may hand messages to Celery (kombu's hub runs it at its next turn)."""
        if not _reserve_slots:
            return
        if threading.get_ident() == self._mt_loop_thread:
            self.release_held(delivery_tag)
            return
        hub = get_event_loop()
        if hub is None:  # no event loop to hand over on: the next fetch's turn finds the reserve as it is
            return
        hub.call_soon(self.release_held, delivery_tag)

    def release_held(self, delivery_tag: Any = None) -> None:
        """A pool process is free (a task was acked or handed back): give it the oldest reserved message, or, if that
        one has waited past solo_batch_ms, give the whole reserve back."""
        platform = self.platform
        if platform is None or not _reserve_slots:
            return
        budget_s = platform.settings.solo_batch_ms / 1000
        if delivery_tag is not None:
            self._mt_pacing.ended(str(delivery_tag), budget_s)
        if worker_state.should_stop is not None or worker_state.should_terminate is not None:
            # Shutting down: the pool would discard a message handed to it now, and the close would put it back
            # reading STARTED; the close gives the reserve back as never fetched instead.
            return
        while self._mt_held and self._in_pool() < self._mt_pacing.pool_limit():
            now = time.monotonic()
            if now - self._mt_held[0].since > budget_s:
                if self._outranked([h.queue for h in self._mt_held]):
                    held, self._mt_held = self._mt_held, []
                    self._give_back_held(held)
                    return
                for h in self._mt_held:  # nothing of a higher priority waits: the reserve stays for a new budget
                    h.since = now
            if now - self._mt_held[0].flags_read_at > CANCEL_RECHECK_S:
                self._recheck_held_flags(now)
            held_one = self._mt_held.pop(0)
            headers = held_one.payload.get("headers")
            if isinstance(headers, dict) and "mt_fetch_flags_at" in headers:
                headers["mt_fetch_flags_at"] = _wall_time(held_one.flags_read_at)
            self._hand_to_celery(held_one.payload, held_one.queue, held_one.item)

    def _hold(self, held: _Held) -> None:
        """Reserve a fetched message ahead of those of a lower priority already reserved: a refill fetch takes the
        queues in priority order, and a critical message it brings goes to the next free process, not behind the
        low ones fetched before it."""
        rank = _queue_rank(held.queue)
        reserve = self._mt_held
        at = len(reserve)
        while at > 0 and _queue_rank(reserve[at - 1].queue) > rank:
            at -= 1
        reserve.insert(at, held)

    def _recheck_held_flags(self, now: float) -> None:
        """Read the cancel flags of the whole reserve again (see CANCEL_RECHECK_S); a cancelled message is handed
        over marked so, and its task records CANCELLED without running."""
        held = self._mt_held
        cancelled = self._cancelled_among([h.item for h in held])
        for h in held:
            h.flags_read_at = now
            headers = h.payload.get("headers") or {}
            if headers.get("id") in cancelled:
                headers["mt_fetch_cancelled"] = 1

    def _cancelled_among(self, items: list[Any]) -> set[str]:
        """The task ids among the messages ``items`` (raw, as fetched) whose cancel flag is set now: one MGET."""
        platform = self.platform
        assert platform is not None
        ids = _task_ids(items)
        if not ids:
            return set()
        try:
            with self.conn_or_acquire() as client:
                flags = client.mget([platform.keys.cancel(task_id) for task_id in ids])
        except (RedisError, *self.connection_errors) as exc:  # as if read a moment earlier: at the fetch
            log.warning("could not read cancel flags before starting held tasks (%s)", exc)
            return set()
        return {task_id for task_id, flag in zip(ids, flags, strict=True) if flag is not None}

    def _give_back_held(self, held: list[_Held]) -> None:
        rest: list[Any] = []
        for h in held:
            rest += [h.queue, h.item, h.deliveries, 0, 0]
        self._give_back(rest)

    # --- a solo worker's overlapped fetch ---------------------------------------------------------------------------
    # A solo worker that fetched, ran the batch, and only then fetched again sat idle for every fetch's round trip
    # and script (about a quarter of its time). With a backlog (the last fetch came back full) it sends the next
    # fetch as a batch starts, so that Redis runs it while the batch runs, and reads its reply once the batch is
    # done. The prefetched batch is fetched with none of its messages STARTED (each records its own start when it
    # runs). When the running batch overruns solo_batch_ms, the prefetched one goes back to the head of its queues
    # with the rest of the running one (read by the consumer, or by the start flusher's thread while a long task
    # runs), so a critical task pushed meanwhile waits at most one and a half budgets (see PREFETCH_MIN_BATCH) plus
    # the task running at that moment.

    def _prefetch(self) -> None:
        with self._mt_prefetch_lock:
            self._send_fetch(self._mt_queues, self._mt_batch, 0)
            self._mt_prefetched = True

    def _give_back_prefetched(self, overrun_s: float | None = None) -> None:
        """Read the reply of the fetch sent early (if it is still unread) and give its messages back. With
        ``overrun_s`` (the start flusher's thread), only while a batch runs and has run longer than that: once the
        batch is over, the consumer may already be waiting on the socket for this reply, and reading it here would
        leave it waiting for a reply that never comes (the batch's end is marked under the same lock)."""
        with self._mt_prefetch_lock:
            if not (self._mt_prefetched and self._mt_expect_reply):
                return
            if overrun_s is not None:
                began = self._mt_batch_began
                if began is None or time.monotonic() - began <= overrun_s:
                    return
            self._mt_prefetched = self._mt_expect_reply = False
            try:
                reply = self.client.parse_response(self.client.connection, "EVALSHA")
            except (RedisError, *self.connection_errors) as exc:
                # Whatever it took stays leased, and nobody renews the leases: the restore sweep brings it back.
                if isinstance(exc, self.connection_errors):
                    self._mt_sent_counts = []  # perhaps written: lost rather than counted twice
                self._requeue_sent_acks()
                log.warning("could not read the prefetched batch to give it back (%s)", exc)
                with suppress(Exception):
                    self.client.connection.disconnect()
                return
            self._mt_sent_acks = []
            self._mt_sent_outcomes = []
            self._mt_sent_counts = []
        if reply:
            reply = self._take_counts(reply)
        if reply:
            self._give_back(list(reply))

    def _give_back(self, rest: list[Any]) -> None:
        """Return fetched messages that have not run (see GIVE_BACK); garbage among them is dead-lettered."""
        platform = self.platform
        assert platform is not None
        args: list[Any] = [platform.keys.status("")]
        for i in range(0, len(rest), 5):
            queue_b, item, deliveries, cancelled, started = rest[i:i + 5]
            queue = queue_b.decode() if isinstance(queue_b, bytes) else queue_b
            if int(deliveries) < 0:
                self.refuse(queue, item, _text(cancelled), recorded=False, lease_tag=_text(started))
                continue
            try:
                envelope = check_envelope(item, platform.settings.max_message_bytes)
            except MalformedMessage as exc:
                self.refuse(queue, item, str(exc), recorded=True)
                continue
            task_id = (envelope.get("headers") or {}).get("id")
            args += [queue, item, str(envelope["properties"]["delivery_tag"]),
                     task_id if int(deliveries) > 0 and isinstance(task_id, str) else "", str(int(deliveries))]
        if len(args) == 1:
            return
        try:
            with self.conn_or_acquire() as client:
                GIVE_BACK(client, [self.unacked_key, self.unacked_index_key, platform.keys.wake(self.service)], args)
        except WRITES_REFUSED as exc:
            # They stay recorded as unacked, and nobody holds them: the restore sweep puts them back.
            log.warning("could not give back %d fetched messages (%s); the restore sweep will", (len(args) - 1) // 5,
                        exc)
        except self.connection_errors as exc:
            log.warning("could not give back %d fetched messages (%s); the restore sweep will", (len(args) - 1) // 5,
                        exc)
            # The connection is gone: say so, as a failed fetch does, so that Celery's consumer reconnects. Kept
            # quiet here, a solo worker whose batch overran while Redis was down waited for good.
            raise
        except RedisError as exc:
            log.warning("could not give back %d fetched messages (%s); the restore sweep will", (len(args) - 1) // 5,
                        exc)

    # --- garbage -----------------------------------------------------------------------------------------------
    def accept_item(self, key: bytes | str, item: bytes | str) -> bool:
        """True if ``item`` (popped by kombu's two-step path, so not recorded) may go on to Celery; otherwise it
        has been dead-lettered."""
        platform = self.platform
        if platform is None:
            return True
        try:
            check_envelope(item, platform.settings.max_message_bytes)
        except MalformedMessage as exc:
            self.refuse(_text(key), item, str(exc), recorded=False)
            return False
        return True

    def refuse(self, queue: str, item: bytes | str, reason: str, *, recorded: bool, lease_tag: str = "") -> None:
        """Dead-letter a popped item that will not go to Celery, saying why (``reason`` is the fetch script's
        when the item was not recorded; the worker's own check, if it refuses too, names the problem better).
        A leased item's unacked entry goes in the same transaction: a ``recorded`` one's under its own delivery
        tag, and its task (if it names one) is marked DEAD_LETTERED; one the fetch refused under ``lease_tag``
        (see FETCH). Never raises: an item that cannot be filed stays unacked for the restore sweep, or, if it was
        not leased at all, is pushed back."""
        platform = self.platform
        assert platform is not None
        raw = item if isinstance(item, bytes) else item.encode()
        if not recorded:
            try:
                check_envelope(raw, platform.settings.max_message_bytes)
            except MalformedMessage as exc:
                reason = str(exc)
        leased = recorded or bool(lease_tag)
        unrecord_args = [raw, lease_tag] if lease_tag else [raw]
        try:
            task_id = quarantine_raw(
                platform, self.service, queue, raw, "MalformedMessage", reason,
                unrecord=(UNRECORD, [self.unacked_key, self.unacked_index_key], unrecord_args) if leased else None)
            if task_id:
                platform.status.transition(platform.redis(self.service), task_id, Status.DEAD_LETTERED, attempt=1,
                                           fields={"error": reason, "error_type": "MalformedMessage",
                                                   "service": self.service})
        except Exception:
            if leased:
                log.exception("could not dead-letter an item from %s; it stays unacked for the restore sweep", queue)
                return
            # The item is already popped and holds no lease: if it cannot be filed, push it back rather than lose it.
            log.exception("could not dead-letter an item from %s; pushing it back", queue)
            try:
                with self.conn_or_acquire() as client:
                    client.rpush(queue, raw)
            except Exception:
                log.exception("could not push an unreadable item back onto %s; it is lost: %r", queue, raw[:200])

    # --- producers inside the worker (Celery's own publishes, restores) wake idle consumers too -----------
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        self._wake(queue)  # before the message: see meetingtasks.store.wake
        super()._put(queue, message, **kwargs)

    def _do_restore_message(self, payload: Any, exchange: Any, routing_key: Any, pipe: Any,
                            leftmost: bool = False) -> None:
        platform = self.platform
        if platform is not None:
            push_wake(pipe, platform.keys, self.service)  # before the message: see meetingtasks.store.wake
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)

    def _put_fanout(self, exchange: Any, message: Any, routing_key: Any, **kwargs: Any) -> None:
        """kombu's fanout publish (Celery's Flower events) with its envelope encoded by orjson; how many received
        a publish of task events decides whether they go on (see meetingtasks.worker.task_events)."""
        publish_batch = kwargs.pop("_publish_batch", None)
        topics = self._get_publish_topics(exchange, routing_key)
        payload = kombu_json.dumps(message)
        if publish_batch is not None:
            for topic in topics:
                publish_batch.add("publish", topic, payload)
            return
        receivers = 0
        with self.conn_or_acquire() as client:
            for topic in topics:
                receivers += int(client.publish(topic, payload))
        if exchange == LISTENERS.exchange:
            if str(routing_key).startswith("task."):  # task events (a batch, or one event when not buffered)
                LISTENERS.heard(receivers)
            LISTENERS.learn(exchange, message, self._get_publish_topic(exchange, BATCH_ROUTING_KEY),
                            self.encode_body)

    def _wake(self, queue: str) -> None:
        platform = self.platform
        if platform is None:
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            push_wake(pipe, platform.keys, self.service)
            pipe.execute()


def fetch_args(platform: Platform, limit: int, start_now: int, acks: list[str], outcomes: list[list[str]], *,
               write_counts: bool = True, counts: list[Any] | None = None,
               probe: tuple[str, bytes] | None = None) -> list[Any]:
    """FETCH's ARGV: take up to ``limit`` messages (``start_now`` of them STARTED at once) after applying ``outcomes``
    and ``acks``. ``write_counts``: write this call's traffic counts and the carried ``counts`` (flat, see
    :class:`~meetingtasks.store.rollup.PendingCounts`) now, else hand them back in the reply. ``probe``: the
    (topic, message) to publish and count the receivers of (see meetingtasks.worker.task_events)."""
    s = platform.settings
    keys = platform.keys
    counts = counts or []
    topic, message = probe or ("", "")
    args: list[Any] = [
        limit, repr(time.time()), s.max_message_bytes, keys.status(""), s.status_ttl_s, keys.status_channel,
        _worker_name(), keys.deadlines, keys.callbacks, keys.batch(""), start_now, len(acks),
        "1" if write_counts else "0", topic, message, len(counts) // 4, *counts, *acks,
    ]
    for entry in outcomes:
        args += entry
    return args


def write_outcomes(platform: Platform, service: str, outcomes: list[list[str]], acks: list[str] | None = None) -> None:
    """Apply buffered task outcomes (then ``acks``) at once (FETCH with no queue to take from), on ``service``'s
    Redis."""
    if outcomes or acks:
        keys = platform.keys
        apply_buffers(platform, platform.redis(service), [keys.unacked(service), keys.unacked_index(service)],
                      fetch_args(platform, 0, 0, acks or [], outcomes))


def settle_at_shutdown(app: Any) -> None:
    """Once the worker has stopped and its pool has drained: apply what the closed channel left behind, then put
    back what the pool never ran.

    A warm shutdown closes the consuming channel before the pool's last results come back, so the outcomes and
    acks they carry (a prefork child hands its outcome over with the result) land in the orphans with no channel
    left to carry them. Unapplied, a finished task would read STARTED and run again when its lease ran out. The
    messages the close left leased (``_unsettled``) and that no ack settled never ran: they go back to the head of
    their queues as the close would have put them, their STARTED undone."""
    platform: Platform = app.mt_platform
    with _orphans_lock:
        left, unsettled = dict(_orphans), dict(_unsettled)
        _orphans.clear()
        _unsettled.clear()
    acked: set[str] = set()
    for service, (acks, outcomes) in left.items():
        try:
            write_outcomes(platform, service, outcomes, acks)
            acked.update(acks)
        except RedisError as exc:  # the leases run out and the restore sweep redelivers: at least once still holds
            log.warning("could not record %d outcomes and %d acks at shutdown (%s); their tasks will run again",
                        len(outcomes), len(acks), exc)
    tags = [tag for tags in unsettled.values() for tag in tags if tag not in acked]
    if not tags:
        return
    try:
        with app.connection_for_write() as connection:
            qos = connection.default_channel.qos
            qos._mt_at_close = True
            for tag in tags:
                qos.restore_by_tag(tag)
    except (RedisError, *Transport.connection_errors) as exc:
        log.warning("could not put back %d messages the pool never ran (%s); the restore sweep will once their "
                    "leases end", len(tags), exc)

def apply_buffers(platform: Platform, client: Any, keys: list[str], args: list[Any]) -> None:
    """Run FETCH with nothing to take (only outcomes and acks to apply); confirmed by replicas when
    ``min_replica_acks`` asks (a shortfall is logged: what was written stands)."""
    acks = platform.replica_acks
    if not acks:
        FETCH(client, keys, args)
        return
    with client.pipeline(transaction=False) as pipe:
        FETCH.queue(pipe, keys, args)
        _replies, acked = acks.execute(pipe)
    acks.note(acked, "task outcomes and acks")


def install_child_outcomes(platform: Platform, service: str) -> None:
    """In a prefork pool child: buffer ``service``'s task outcomes for the parent (see worker.outcomes), and write a
    buffered STARTED of a task that runs longer than START_FLUSH_S while it runs."""
    sink = ChildOutcomes(lambda entries: write_outcomes(platform, service, entries))
    register_child_sink(service, sink)
    Loop(f"start-flusher-{service}", START_FLUSH_S, lambda: sink.flush_stale_start(START_FLUSH_S)).start()


def _complete_delivery_info(envelope: dict[str, Any], queue: str) -> dict[str, Any]:
    """Fill in the delivery info that kombu reads unguarded (a foreign producer may leave it out), as the fetch
    script recorded it: no exchange, the queue it came from."""
    props = envelope["properties"]
    info = props.get("delivery_info")
    if info is None:
        info = props["delivery_info"] = {}
    if info.get("exchange") is None:
        info["exchange"] = ""
    if info.get("routing_key") is None:
        info["routing_key"] = queue
    return envelope


def _hold_back_starts(outcomes: list[list[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """Split a threads worker's buffered outcomes into those a fetch sends now and the STARTEDs it keeps back: of a
    task still running for less than START_FLUSH_S, so that its STARTED and its outcome reach Redis in one call, where
    FETCH writes them as one (as a solo batch's are). The start flusher sends a kept one once it is older; a status
    write that bypasses the buffer sends it first (``PlatformTask.apply_buffered_start``). Each STARTED that is sent
    goes right before its task's outcome, as FETCH folds them only when adjacent (other tasks' entries, which touch
    other records, are not reordered among themselves)."""
    ended = {entry[0] for entry in outcomes if entry[1] != "STARTED"}
    now = time.time()
    send: list[list[str]] = []
    kept: list[list[str]] = []
    starts: dict[str, list[str]] = {}  # task id -> its STARTED, put right before its outcome
    for entry in outcomes:
        task_id = entry[0]
        if entry[1] == "STARTED":
            if task_id in ended:
                previous = starts.pop(task_id, None)
                if previous is not None:
                    send.append(previous)
                starts[task_id] = entry
            elif now - float(entry[2]) < START_FLUSH_S:
                kept.append(entry)
            else:
                send.append(entry)
            continue
        previous = starts.pop(task_id, None)
        if previous is not None:
            send.append(previous)
        send.append(entry)
    send.extend(starts.values())  # none left: every one in ``ended`` had an outcome after it
    return send, kept


def _wall_time(monotonic_at: float) -> float:
    """``time.time()`` at the moment ``time.monotonic()`` read ``monotonic_at``: what a pool child, which has its
    own clocks, compares with its own ``time.time()``."""
    return time.time() - (time.monotonic() - monotonic_at)


def _queue_rank(queue: str) -> int:
    """A queue's place in the strict priority order (0: critical); a queue not of ours comes last."""
    parsed = parse_queue(queue)
    return PRIORITY_ORDER.index(parsed[1]) if parsed is not None else len(PRIORITY_ORDER)


def _task_ids(items: list[Any]) -> list[str]:
    """The task ids of the messages ``items`` (raw, as fetched), leaving out those too broken to read one from."""
    ids: list[str] = []
    for item in items:
        try:
            task_id = (loads(item).get("headers") or {}).get("id")
        except Exception:  # unreadable: the delivery path refuses it
            continue
        if isinstance(task_id, str):
            ids.append(task_id)
    return ids


def _text(value: bytes | str | int) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# The consuming channels of this process, for the lease renewer (see held_delivery_tags).
_channels: dict[int, Channel] = {}


def _held_tags() -> list[str]:
    return [tag for channel in list(_channels.values()) for tag in channel.held_tags()] + _orphan_tags()


add_held_source(_held_tags)

_worker_names: dict[int, str] = {}


def _worker_name() -> str:
    """``host:pid`` of this process (looked up again in a forked or daemonised child)."""
    pid = os.getpid()
    name = _worker_names.get(pid)
    if name is None:
        name = _worker_names[pid] = f"{socket.gethostname()}:{pid}"
    return name


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
    # To Celery's consumer, Redis refusing writes is a lost connection: it restarts the consumer with backoff (and
    # reconnects) instead of exiting, wherever the refusal meets it. A worker starting inside such a window died on
    # kombu's queue-binding writes. The fetch and the bookkeeping handle it themselves first (see _brpop_read).
    connection_errors = (*kombu_redis.Transport.connection_errors, *WRITES_REFUSED)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        quiet(loop)  # kombu adds this transport's readers again on every pass (see meetingtasks.worker.hub)
        super().register_with_event_loop(connection, loop)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    """Our channel on a Sentinel-managed primary: kombu's Sentinel pool (each new connection asks the sentinels
    where the primary is) with connections that drop themselves when the primary they reach was demoted (see
    :class:`meetingtasks.store.connections.SentinelConnection`). Everything else is :class:`Channel`'s.

    The sentinels come from the ``mt_sentinel_url`` transport option, not from kombu's ``;``-separated alternate
    URLs: on a lost connection kombu switches to the next alternate and takes the transport its scheme names
    (kombu's own ``sentinel``), which would put the worker on stock kombu's pop-then-record fetch, and a failover
    between the two steps loses the message. One broker URL, so nothing to switch to."""

    connection_class = connections.SentinelConnection  # type: ignore[assignment]
    connection_class_ssl = connections.SentinelSSLConnection  # type: ignore[assignment]

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        params = {k: v for k, v in self._connparams(asynchronous).items() if k not in ("host", "port")}
        options = self.connection.client.transport_options
        target = SentinelUrl.parse(options["mt_sentinel_url"])
        manager = connections.PlatformSentinel(list(target.sentinels), sentinel_kwargs=options.get("sentinel_kwargs"),
                                               **params)
        # Kept so that kombu closes its connections to the sentinels with the pools (celery/kombu#1108).
        if asynchronous:
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        credentials = {k: params[k] for k in ("username", "password") if k in params}
        return manager.master_for(target.master_name, **credentials).connection_pool


class SentinelTransport(Transport):
    """:class:`Transport` for ``sentinel://`` broker URLs (in kombu's spelling, see
    :meth:`meetingtasks.core.sentinel.SentinelUrl.kombu_url`; the master name comes as a transport option)."""

    Channel = SentinelChannel
    default_port = 26379

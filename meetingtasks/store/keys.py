"""Every Redis key meetingtasks uses, and who owns it.

``P`` is ``Settings.key_prefix`` (default ``mt:``); ``svc`` a service name; ``id`` a task id. The schema (each
key's pattern, type, owner and lifetime) is :data:`KEY_SCHEMA`, one entry per key; the table below is rendered
from it when the module loads, and docs/redis-keys.md by ``python -m meetingtasks.operations.docs_gen``.

Nothing else in the code base spells a key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One row of the key schema: a key pattern (``P`` for the prefix), its Redis type, who writes it, and
    its lifetime and contents."""

    pattern: str
    type: str
    owner: str
    notes: str


#: The key schema: every key (and the one consumer group) the platform uses. The module docstring and
#: docs/redis-keys.md are rendered from this (``python -m meetingtasks.operations.docs_gen``).
KEY_SCHEMA: tuple[KeySpec, ...] = (
    KeySpec("<svc>.<priority>", "list", "kombu (routing)",
            "the four task queues; LPUSH in, BRPOP out"),
    KeySpec("P unacked:<svc>", "hash", "kombu QoS",
            "delivery tag -> [message, exchange, queue]; mt-refused:... -> {queue, why} JSON, newline, raw bytes "
            "(an item the fetch refused, until its dead letter is filed)"),
    KeySpec("P unacked_index:<svc>", "zset", "kombu QoS, lease",
            "delivery tag scored by lease start (s; the fetch and the lease renewer write whole seconds, rounded up); "
            "the renewer re-scores live tags"),
    KeySpec("P unacked_mutex:<svc>", "string", "kombu QoS",
            "restore-sweep lock, expires by itself"),
    KeySpec("P dlq:<svc>", "hash", "deadletter",
            "dead-letter id -> JSON dead letter; forever"),
    KeySpec("P dlq:<svc>:index", "zset", "deadletter",
            "dead-letter id scored by last failure (ms)"),
    KeySpec("P delayed:<svc>:<priority>", "zset", "delayed",
            "task id scored by due time (epoch ms); one per priority, pumped critical first"),
    KeySpec("P delayed:<svc>:msg", "hash", "delayed",
            "task id -> `<queue>\\n<message>`; until the pump moves it or a cancel removes it"),
    KeySpec("P status:<id>", "hash", "status",
            "task status record; TTL status_ttl_s (after the due time for a delayed task); also the poison "
            "guard's delivery count of the current run (`deliveries`) and `cancel_requested_at` (a copy of "
            "the cancel flag, which the worker's fetch reads)"),
    KeySpec("P status", "pubsub", "status",
            "every status transition, JSON"),
    KeySpec("P cancel:<id>", "string", "cancel",
            "cancel flag (time of the request); checked by handlers (the worker's fetch reads its copy in the "
            "status record); TTL status_ttl_s"),
    KeySpec("P wake:<svc>", "list", "wake, worker fetch",
            "wake tokens for idle workers (<= 64)"),
    KeySpec("P dedup:<key>", "string", "dedup (dispatcher)",
            "task id owning a dedup key, set in the Lua call that queues the task; TTL dedup_ttl_s; void once "
            "that task's status record is gone"),
    KeySpec("P callback-retries", "hash", "callbacks",
            "outbox entry -> failed dispatch attempts so far (transient Redis errors); removed when the entry "
            "settles"),
    KeySpec("P beat::schedule", "zset", "redbeat (beat)",
            "periodic entry key scored by next run (s)"),
    KeySpec("P beat::statics", "set", "redbeat (beat)",
            "names of the entries from beat/schedule.py"),
    KeySpec("P beat::lock", "string", "redbeat (beat)",
            "the one beat that fires periodic entries; TTL beat_lock_timeout_s, renewed every tick"),
    KeySpec("P beat:<entry>", "hash", "redbeat (beat)",
            "definition and last run of one entry"),
    KeySpec("P beat-last:<entry>", "string", "scheduler (beat)",
            "task id of the entry's last dispatch, so a run not yet started is not queued again; TTL "
            "status_ttl_s"),
    KeySpec("P queue-depths", "string", "maintenance",
            "JSON snapshot of `stats` rows and time; rewritten every queue_depths_interval_s"),
    KeySpec("P rollup:<minute>", "hash", "status, worker fetch; exporter: depth (store.rollup)",
            "one minute of task traffic per service and priority (`<svc>|<priority>|<started, succeeded, "
            "failed, depth>`, `<svc>|wait|<bucket>`) for the console's charts; <minute> is epoch s // 60; "
            "TTL 3,900 s"),
    KeySpec("P rollup-writer", "string", "metrics.rollup (exporter)",
            "the one exporter that samples queue depths into the rollup (instance id); TTL 30 s, renewed every "
            "flush"),
    KeySpec("P console-audit", "list", "console",
            "JSON {who, time, action, what, count} of each console action, newest first; the last 10,000"),
    KeySpec("P top:<slot start s>", "hash", "status, worker fetch (store.rollup)",
            "task type -> 1: the types counted in one 10 s slot of `top`; TTL 1 h + 20 s"),
    KeySpec("P top:<slot start s>:<type>", "hash", "status, worker fetch (store.rollup)",
            "`<STATUS>|<duration bucket>` -> transitions of one type in one slot (wait of a start, run time "
            "of an outcome); TTL 1 h + 20 s"),
    KeySpec("P deadlines", "zset", "dispatcher, watchdog",
            "task id scored by its timeout deadline (ms); removed by the terminal transition"),
    KeySpec("P callbacks", "zset", "status, callbacks",
            "outbox: `t:<id>` / `b:<batch>` scored by next attempt (s); added by the first terminal "
            "transition, drained by the watchdog"),
    KeySpec("P batch:<id>", "hash", "dispatcher, status",
            "total, done, n:<STATUS>, on_complete; TTL status_ttl_s"),
    KeySpec("P rate:<type>", "string", "ratelimit",
            "GCRA theoretical arrival time (ms) of a rate-limited type; expires when idle"),
    KeySpec("P gateway:<instance>", "hash", "gateway",
            "session counters of one gateway process; TTL 30 s, refreshed every 5 s"),
    KeySpec("P workers:<svc>", "hash", "metrics.heartbeat",
            "worker name -> JSON heartbeat, written by the consumer's event loop; TTL 1 day, stale fields "
            "pruned by the exporter"),
    KeySpec("P services", "set", "metrics.heartbeat, platform",
            "names of the services whose workers ran on this Redis, re-added with every heartbeat: how `stats`, "
            "`dlq`, the exporter, Flower and beat's pumps know a service whose code they do not import; "
            "forever (a service retired for good: SREM it)"),
    KeySpec("P bridges", "hash", "metrics.reporter",
            "bridge consumer -> JSON counters and time, every heartbeat_interval_s; TTL 1 day, stale fields "
            "pruned by the exporter"),
    KeySpec("P gateways", "zset", "gateway, exporter",
            "gateway instance scored by its last counters write (s): the index of `P gateway:<inst>`; the "
            "exporter drops members whose hash expired"),
    KeySpec("P events:<channel>", "stream", "events.publisher, events.retention",
            "one per event channel; field `event` = the JSON envelope; trimmed only below what every consumer "
            "group acknowledged (`maintenance_trim_streams`) and older than event_replay_retention_s (at most "
            "stream_maxlen acknowledged entries kept), never capped"),
    KeySpec("<channel>", "pubsub", "events.publisher",
            "live copy of each event, un-prefixed so that outside services PUBLISH on the plain name"),
    KeySpec("P event:<event id>", "string", "events.publisher, bridge",
            "\"this id is in its stream\": appends are idempotent by id; TTL event_id_ttl_s"),
    KeySpec("P event-attempts:<event id>", "hash", "bridge",
            "subscription -> failed handler runs before dead-lettering; TTL 1 day"),
    KeySpec("P event-replays", "hash", "events.replay",
            "replay (channel, since, until, subscription name) -> JSON {generation, state, started_at, "
            "finished_at, tasks, reached}: a replay asked again reuses its generation (once-only; an open-ended one "
            "carries on after `reached`); one field per subscription and window"),
    KeySpec("P event-replay-generation", "string", "events.replay",
            "counter of replay generations (INCR); a replay's task ids derive from its generation"),
    KeySpec("P profile-requests", "hash", "profiling",
            "task type -> runs still to profile (`meetingtasks profile TYPE --runs N`); a worker claims one "
            "atomically per profiled run; workers read the field names every profile_poll_interval_s"),
    KeySpec("P profiles:<task type>", "list", "profiling",
            "JSON profiles of that type's profiled runs, newest first (text and pyinstrument session); the "
            "latest profile_keep, each at most profile_max_bytes; TTL 7 days"),
    KeySpec("P op:<task id>", "hash", "services (operation)",
            "what one handler run decided: once-only values (new ids, tokens) and its result, so a redelivery "
            "repeats nothing; TTL op_ttl_s"),
    KeySpec("P blob:<id>", "hash", "blobs",
            "`data`, `content_type`, `size`, `created_at`: audio/video passed by reference (`blob:<id>`); TTL "
            "blob_ttl_s"),
    KeySpec("P user:<user id>", "hash", "user store",
            "username, email, display_name, avatar_url, bio, status, meeting_id, password (scrypt), "
            "created_at, updated_at, op markers; forever"),
    KeySpec("P username:<name>", "string", "user store",
            "user id owning a (lower-cased) name; SET NX"),
    KeySpec("P login:<sha256 of token>", "hash", "user store",
            "user_id, username, created_at, expires_at; expires by itself a little after expires_at"),
    KeySpec("P logins", "zset", "user store",
            "login key scored by expires_at (s); the beat job sweeps it (user goes offline)"),
    KeySpec("P user-logins:<user id>", "set", "user store",
            "the user's login keys"),
    KeySpec("P meeting:<id>", "hash", "meeting store",
            "title, host_id, state (scheduled, live, ended), start_at, started_at, ends_at, ended_at, reason, "
            "max_duration_s, op markers; TTL domain_retention_s once ended"),
    KeySpec("P meeting:<id>:participants", "hash", "meeting store",
            "user id -> JSON {joined_at, op, client}"),
    KeySpec("P meeting:<id>:left", "hash", "meeting store",
            "user id -> JSON {left_at, op}"),
    KeySpec("P meeting:<id>:ai", "hash", "meeting store",
            "AI result kind -> JSON of the latest result"),
    KeySpec("P meeting:<id>:notices", "hash", "meeting store",
            "`<user>|<kind>` -> id of the participant's pending `meeting_notify` task"),
    KeySpec("P meetings:live", "zset", "meeting store",
            "live meeting id scored by ends_at (s); the beat job ends the overdue ones"),
    KeySpec("P stream:<id>", "hash", "media store",
            "meeting_id, user_id, kind, state, chunks, started_at, stopped_at, last audio_ref"),
    KeySpec("P recording:<id>", "hash", "media store",
            "meeting_id, state, started_at, stopped_at"),
    KeySpec("P media:<meeting id>", "hash", "media store",
            "`recording` (active recording id), `stream:<id>` (live streams)"),
    KeySpec("P signal:<session id>", "hash", "signaling store",
            "meeting_id, user_id, peer, state (open, offered, connected, closed), offer, answer, opened_at, "
            "last_seen, closed_at, reason"),
    KeySpec("P signal:<session id>:ice", "hash", "signaling store",
            "candidate -> JSON {from_user, sdp_mid, ...}"),
    KeySpec("P signals:alive", "zset", "signaling store",
            "open session id scored by last heartbeat (s); the beat job closes the silent ones"),
    KeySpec("P ai:<task id>", "string", "ai store",
            "JSON result of one AI task; TTL op_ttl_s"),
    KeySpec("P bridge", "group", "bridge",
            "the bridges' consumer group on every stream; an (event, subscription) pair counts as seen when "
            "`P status:<its task id>` exists"),
)


def render_key_schema_rst() -> str:
    """The schema as a plain-text table, for the module docstring (``help(meetingtasks.store.keys)``)."""
    lines = [f"{'key':<34} {'type':<7} {'owner':<22} lifetime / notes"]
    lines += [f"{s.pattern:<34} {s.type:<7} {s.owner:<22} {s.notes}" for s in KEY_SCHEMA]
    return "\n".join(lines)


# The docstring carries the table a reader of ``help()`` expects, from the one structured source above.
__doc__ = f"{__doc__}\n{render_key_schema_rst()}\n"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "mt:"

    def unacked(self, service: str) -> str:
        return f"{self.prefix}unacked:{service}"

    def unacked_index(self, service: str) -> str:
        return f"{self.prefix}unacked_index:{service}"

    def unacked_mutex(self, service: str) -> str:
        return f"{self.prefix}unacked_mutex:{service}"

    def dlq(self, service: str) -> str:
        return f"{self.prefix}dlq:{service}"

    def dlq_index(self, service: str) -> str:
        return f"{self.prefix}dlq:{service}:index"

    def delayed(self, service: str, priority: str) -> str:
        return f"{self.prefix}delayed:{service}:{priority}"

    def delayed_messages(self, service: str) -> str:
        return f"{self.prefix}delayed:{service}:msg"

    def status(self, task_id: str) -> str:
        return f"{self.prefix}status:{task_id}"

    @property
    def status_channel(self) -> str:
        return f"{self.prefix}status"

    def wake(self, service: str) -> str:
        return f"{self.prefix}wake:{service}"

    def cancel(self, task_id: str) -> str:
        return f"{self.prefix}cancel:{task_id}"

    def dedup(self, dedup_key: str) -> str:
        return f"{self.prefix}dedup:{dedup_key}"

    @property
    def beat_prefix(self) -> str:
        """redbeat's key prefix: it spells ``<prefix>:schedule``, ``<prefix>:lock`` and ``<prefix><entry>``."""
        return f"{self.prefix}beat:"

    def beat_last(self, entry: str) -> str:
        return f"{self.prefix}beat-last:{entry}"

    @property
    def queue_depths(self) -> str:
        return f"{self.prefix}queue-depths"

    def rollup(self, minute: int) -> str:
        """One minute of the charts; the recording scripts derive the name from :attr:`status_channel`."""
        return f"{self.prefix}rollup:{minute}"

    @property
    def rollup_writer(self) -> str:
        return f"{self.prefix}rollup-writer"

    @property
    def console_audit(self) -> str:
        return f"{self.prefix}console-audit"

    def top_slot(self, slot_start_s: int) -> str:
        """Index of one rollup slot of ``top``; the recording scripts derive the name from :attr:`status_channel`."""
        return f"{self.prefix}top:{slot_start_s}"

    def top_type(self, slot_start_s: int, task_type: str) -> str:
        return f"{self.top_slot(slot_start_s)}:{task_type}"

    @property
    def deadlines(self) -> str:
        return f"{self.prefix}deadlines"

    @property
    def callbacks(self) -> str:
        return f"{self.prefix}callbacks"

    @property
    def callback_retries(self) -> str:
        return f"{self.prefix}callback-retries"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{batch_id}"

    def rate(self, task_type: str) -> str:
        return f"{self.prefix}rate:{task_type}"

    def gateway(self, instance: str) -> str:
        return f"{self.prefix}gateway:{instance}"

    def workers(self, service: str) -> str:
        return f"{self.prefix}workers:{service}"

    @property
    def services(self) -> str:
        return f"{self.prefix}services"

    @property
    def bridges(self) -> str:
        return f"{self.prefix}bridges"

    @property
    def gateways(self) -> str:
        return f"{self.prefix}gateways"

    def event_stream(self, channel: str) -> str:
        return f"{self.prefix}events:{channel}"

    def event_channel(self, channel: str) -> str:
        """The pub/sub channel of an event channel: its plain name, as outside publishers use it."""
        return channel

    def event_id(self, event_id: str) -> str:
        return f"{self.prefix}event:{event_id}"

    def event_attempts(self, event_id: str) -> str:
        return f"{self.prefix}event-attempts:{event_id}"

    @property
    def event_replays(self) -> str:
        return f"{self.prefix}event-replays"

    @property
    def event_replay_generation(self) -> str:
        return f"{self.prefix}event-replay-generation"

    @property
    def profile_requests(self) -> str:
        return f"{self.prefix}profile-requests"

    def profiles(self, task_type: str) -> str:
        return f"{self.prefix}profiles:{task_type}"

    @property
    def bridge_group(self) -> str:
        """Consumer group name (not a key) the bridges share on every event stream."""
        return f"{self.prefix}bridge"


    # --- the meeting system's domain state (meetingtasks/services/<svc>/store.py) -----------------------------
    def operation(self, task_id: str) -> str:
        return f"{self.prefix}op:{task_id}"

    def blob(self, blob_id: str) -> str:
        return f"{self.prefix}blob:{blob_id}"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def username(self, name: str) -> str:
        return f"{self.prefix}username:{name.lower()}"

    def login(self, token_digest: str) -> str:
        return f"{self.prefix}login:{token_digest}"

    @property
    def logins(self) -> str:
        return f"{self.prefix}logins"

    def user_logins(self, user_id: str) -> str:
        return f"{self.prefix}user-logins:{user_id}"

    def meeting(self, meeting_id: str) -> str:
        return f"{self.prefix}meeting:{meeting_id}"

    def meeting_participants(self, meeting_id: str) -> str:
        return f"{self.prefix}meeting:{meeting_id}:participants"

    def meeting_left(self, meeting_id: str) -> str:
        return f"{self.prefix}meeting:{meeting_id}:left"

    def meeting_ai(self, meeting_id: str) -> str:
        return f"{self.prefix}meeting:{meeting_id}:ai"

    def meeting_notices(self, meeting_id: str) -> str:
        return f"{self.prefix}meeting:{meeting_id}:notices"

    @property
    def meetings_live(self) -> str:
        return f"{self.prefix}meetings:live"

    def stream(self, stream_id: str) -> str:
        return f"{self.prefix}stream:{stream_id}"

    def recording(self, recording_id: str) -> str:
        return f"{self.prefix}recording:{recording_id}"

    def meeting_media(self, meeting_id: str) -> str:
        return f"{self.prefix}media:{meeting_id}"

    def signal(self, session_id: str) -> str:
        return f"{self.prefix}signal:{session_id}"

    def signal_ice(self, session_id: str) -> str:
        return f"{self.prefix}signal:{session_id}:ice"

    @property
    def signals_alive(self) -> str:
        return f"{self.prefix}signals:alive"

    def ai_result(self, task_id: str) -> str:
        return f"{self.prefix}ai:{task_id}"

#: Time a failed-handler counter of an event survives.
EVENT_ATTEMPTS_TTL_S = 86_400
#: Lifetime of a task type's kept profiles after the newest one (``P profiles:<task type>``).
PROFILE_TTL_S = 7 * 86_400

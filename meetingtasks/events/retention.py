"""Stream retention: an event leaves its stream only once every consumer group has acknowledged it.

Publishing appends without any cap (a ``MAXLEN`` at append time drops the oldest entries whether or not a
bridge has read them: during a bridge outage, unread events vanished). :func:`trim_streams`, run by the
``maintenance_trim_streams`` job every ``stream_trim_interval_s``, trims each channel's stream with one
atomic script:

- **A stream read by consumer groups** (the bridges' group, and any group of the user's own): everything
  below the oldest entry some group still needs is removed (``XTRIM MINID``). A group needs its oldest
  pending entry (read, not acknowledged), or when nothing is pending, the entry after its last-delivered
  id. The slowest group holds the stream; acknowledged entries behind one of its pending entries stay too.
- **A stream no group reads** (no bridge has started on this Redis yet): a bridge creates its group from
  the start of the stream and handles everything still there, so entries are kept
  ``stream_groupless_retention_s`` (by the Redis clock); older ones are removed with a warning that says
  how many.
- **Kept for replay**: acknowledged entries younger than ``event_replay_retention_s`` (by the time in
  their id) stay, so that ``meetingtasks events replay`` can rewind them; only the newest
  ``stream_maxlen`` entries are kept for that, so at a high event rate the replay window is shorter
  (``stream_maxlen`` / events per second). ``0`` trims acknowledged entries at the next trim.
- **The hard cap** ``stream_maxlen``: a stream longer than that is reported loudly (a warning at every
  trim, ``meetingtasks_event_stream_over_cap`` in the exporter, a warning from ``meetingtasks stats``) and
  **kept whole**: nothing unacknowledged is removed and publishes are still accepted. That is what a
  BullMQ or Sidekiq user expects of accepted work: it is never dropped, and the only hard limit is Redis's
  own memory (``maxmemory`` with ``noeviction``, where a publish fails with Redis's OOM error). Refusing
  publishes at our cap instead would turn a bridge outage into an outage of every task that publishes
  an event. The cap must exceed the peak event rate times ``stream_trim_interval_s`` (acknowledged
  entries wait for the next trim): 100,000 at 30 s covers about 3,000 events/s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from meetingtasks.events.channels import CHANNELS
from meetingtasks.lua import LuaScript
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

#: Trims one event stream below the oldest entry a consumer group still needs (lua/trim_stream.lua).
TRIM = LuaScript.load("trim_stream")


@dataclass(frozen=True)
class Trim:
    """What one trim did to a channel's stream."""

    channel: str
    stream: str
    trimmed: int  # entries removed
    length: int  # entries left
    groups: int  # consumer groups on the stream
    min_id: str  # oldest id kept ("" when the stream does not exist)
    cap: int

    @property
    def over_cap(self) -> bool:
        return self.length > self.cap


@dataclass(frozen=True)
class GroupState:
    name: str
    pending: int  # read by a consumer, not acknowledged
    last_delivered_id: str
    lag: int | None = None  # entries not yet read by the group (Redis >= 7 reports it; None: unknown)


@dataclass(frozen=True)
class StreamState:
    """A channel's stream as read now (no trimming): its length against the cap, and its groups."""

    channel: str
    stream: str
    length: int
    cap: int
    last_id: str  # id of the newest entry ("" when empty)
    groups: tuple[GroupState, ...]

    @property
    def over_cap(self) -> bool:
        return self.length > self.cap

    def behind(self) -> list[GroupState]:
        """Groups that have not acknowledged every entry: something pending, or entries not yet read."""
        return [g for g in self.groups if g.pending or (self.last_id and _older(g.last_delivered_id, self.last_id))]

    def warning(self, bridge_group: str) -> str:
        """One line saying the stream is over its cap, what the policy does, and who holds it."""
        head = (f"event stream {self.stream} holds {self.length} events, over its cap stream_maxlen={self.cap}; "
                "nothing unacknowledged is dropped and publishes go on")
        behind = self.behind()
        if not self.groups:
            return f"{head}; no consumer group reads it (start a bridge: `meetingtasks bridge`)"
        if not behind:
            return (f"{head}; every group is caught up: acknowledged events wait for maintenance_trim_streams "
                    "(is beat running, and a user worker?)")
        who = ", ".join(f"{g.name} ({g.pending} pending, last read {g.last_delivered_id})" for g in behind)
        hint = " (is a bridge running?)" if any(g.name == bridge_group for g in behind) else ""
        return f"{head}; waiting for group {who}{hint}"


def trim_streams(platform: Platform) -> list[Trim]:
    """Trim every channel's stream below what all its consumer groups acknowledged; warn of streams over
    the cap. Entries of a stream without a group are kept ``stream_groupless_retention_s``."""
    settings = platform.settings
    client = platform.redis()
    retention_ms = int(settings.stream_groupless_retention_s * 1000)
    replay_ms = int(settings.event_replay_retention_s * 1000)
    trims: list[Trim] = []
    for channel in CHANNELS:
        stream = platform.keys.event_stream(channel)
        reply = _fields(TRIM(client, [stream], [retention_ms, replay_ms, settings.stream_maxlen]))
        trim = Trim(channel, stream, int(reply["trimmed"]), int(reply["length"]), int(reply["groups"]),
                    _text(reply["min_id"]), settings.stream_maxlen)
        trims.append(trim)
        if trim.trimmed and not trim.groups:
            log.warning("removed %d events of %s older than %ds (stream_groupless_retention_s): no consumer "
                        "group reads this stream; a bridge that starts handles the rest",
                        trim.trimmed, stream, settings.stream_groupless_retention_s)
    over = [t.channel for t in trims if t.over_cap]
    if over:
        for state in stream_states(platform, over):
            if state.over_cap:
                log.warning(state.warning(platform.keys.bridge_group))
    return trims


def stream_states(platform: Platform, channels: list[str] | None = None) -> list[StreamState]:
    """The length and consumer groups of each channel's stream (one pipeline; read-only)."""
    client = platform.redis()
    names = list(channels if channels is not None else CHANNELS)
    streams = [platform.keys.event_stream(c) for c in names]
    with client.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xlen(stream)
            pipe.xrevrange(stream, count=1)
            pipe.xinfo_groups(stream)
        replies = pipe.execute(raise_on_error=False)
    states = []
    for index, (channel, stream) in enumerate(zip(names, streams, strict=True)):
        length, last, groups = replies[3 * index:3 * index + 3]
        if isinstance(groups, redis.ResponseError):
            groups = []  # no such stream yet
        states.append(StreamState(
            channel, stream, length if isinstance(length, int) else 0, platform.settings.stream_maxlen,
            _text(last[0][0]) if isinstance(last, list) and last else "",
            tuple(GroupState(_text(g["name"]), int(g["pending"]), _text(g["last-delivered-id"]),
                             int(g["lag"]) if isinstance(g.get("lag"), int) else None) for g in groups),
        ))
    return states


def _older(a: str, b: str) -> bool:
    a_ms, _, a_seq = a.partition("-")
    b_ms, _, b_seq = b.partition("-")
    return (int(a_ms), int(a_seq or 0)) < (int(b_ms), int(b_seq or 0))


def _fields(flat: list[Any]) -> dict[str, Any]:
    return {_text(k): v for k, v in zip(flat[::2], flat[1::2], strict=True)}


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

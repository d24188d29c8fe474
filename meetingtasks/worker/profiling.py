"""Profiling task runs on request: ``meetingtasks profile TYPE --runs N`` profiles the next N runs of TYPE.

The request is a field of ``P profile-requests`` (task type -> runs still to profile). Whichever worker
runs the type next claims a run (an atomic decrement, :data:`CLAIM`) and runs the handler under
pyinstrument's sampling profiler (the optional extra ``meetingtasks[profile]``); the profile goes to
``P profiles:<type>``, newest first: the ``profile_keep`` latest per type, each at most
``profile_max_bytes``, for a week. A profile holds the text rendering and pyinstrument's session JSON
(``Session.from_json`` reads it back), the form a flame view renders, with the samples of one call stack
merged (:func:`merged_samples`).

The hot path: :meth:`ProfileGate.wanted` is what every task run pays when nothing is requested: a clock
read and a set lookup. The set of requested types is refreshed from Redis at most every
``profile_poll_interval_s`` by the process that runs tasks (one HKEYS round trip; in a prefork child too,
where no loop of the main process could tell it). ``python -m bench --only drain --quick`` measures the
drain with and without it (docs/profiling.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from meetingtasks.lua import LuaScript
from meetingtasks.store.keys import PROFILE_TTL_S
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

#: pyinstrument's sampling interval: 1 ms, its own default (a run of a few ms still gets samples).
SAMPLE_INTERVAL_S = 0.001

#: Claims one profiled run of a task type: an atomic decrement of the runs requested (lua/claim_profile_run.lua).
CLAIM = LuaScript.load("claim_profile_run")


@dataclass(frozen=True)
class Profile:
    """One profiled run."""

    id: str
    task_type: str
    task_id: str
    worker: str
    started_at: float  # epoch seconds
    duration_s: float
    error: str | None  # the exception type when the handler raised
    text: str  # pyinstrument's text rendering
    session: dict[str, Any] | None  # pyinstrument's session JSON (None when over profile_max_bytes)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Profile:
        return cls(**orjson.loads(raw))

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    def header(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        outcome = f", raised {self.error}" if self.error else ""
        return f"profile {self.id} of {self.task_type} task {self.task_id} on {self.worker} at {when}: " \
               f"{self.duration_s * 1000:.1f} ms{outcome}"


class Profiles:
    """Requests and kept profiles of one platform (the global Redis)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.keys = platform.keys

    def request(self, task_type: str, runs: int = 1) -> int:
        """Profile the next ``runs`` runs of ``task_type`` on any worker (added to any runs still
        requested); returns the runs now requested."""
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        return int(self.platform.redis().hincrby(self.keys.profile_requests, task_type, runs))

    def requested(self) -> dict[str, int]:
        """Task type -> runs still to profile."""
        raw = self.platform.redis().hgetall(self.keys.profile_requests)
        return {_text(k): int(v) for k, v in raw.items()}

    def cancel(self, task_type: str) -> bool:
        """Withdraw what is still requested for ``task_type``; ``False`` if nothing was."""
        return bool(self.platform.redis().hdel(self.keys.profile_requests, task_type))

    def kept(self, task_type: str) -> list[Profile]:
        """The kept profiles of ``task_type``, newest first."""
        raw = self.platform.redis().lrange(self.keys.profiles(task_type), 0, -1)
        return [Profile.from_json(item) for item in raw]

    def wait(self, task_type: str, count: int, *, known: Iterable[str], timeout_s: float,
             poll_s: float = 0.25) -> list[Profile]:
        """Wait up to ``timeout_s`` for ``count`` profiles of ``task_type`` whose ids are not in ``known``;
        returns those that came (oldest first), perhaps fewer."""
        seen = set(known)
        deadline = time.monotonic() + timeout_s
        while True:
            fresh = [p for p in self.kept(task_type) if p.id not in seen]
            if len(fresh) >= count or time.monotonic() >= deadline:
                return list(reversed(fresh))
            time.sleep(poll_s)

    def save(self, profile: Profile) -> None:
        """Keep ``profile``: the newest ``profile_keep`` of its type stay, for :data:`PROFILE_TTL_S`."""
        settings = self.platform.settings
        data = profile.to_json()
        if len(data) > settings.profile_max_bytes:
            # The session is the big part (every frame); the text stays, cut to the cap if it must be.
            budget = max(0, settings.profile_max_bytes - 2048)
            text = profile.text if len(profile.text) <= budget else profile.text[:budget] + "\n[cut at " \
                f"profile_max_bytes={settings.profile_max_bytes}]\n"
            data = orjson.dumps({**profile.__dict__, "session": None, "text": text})
        key = self.keys.profiles(profile.task_type)
        with self.platform.redis().pipeline(transaction=True) as pipe:
            pipe.lpush(key, data)
            pipe.ltrim(key, 0, settings.profile_keep - 1)
            pipe.expire(key, PROFILE_TTL_S)
            pipe.execute()

    def claim(self, task_type: str) -> bool:
        reply = CLAIM(self.platform.redis(), [self.keys.profile_requests], [task_type])
        return bool(int(reply[1]))


class ProfileGate:
    """Per process: which task types have profiled runs requested, refreshed at most every
    ``profile_poll_interval_s``. :meth:`wanted` is on every task's path, so it is a clock read and a set
    lookup; a refresh that fails keeps the last answer (a task never fails because of profiling)."""

    def __init__(self) -> None:
        self._types: frozenset[str] = frozenset()
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self._warned_missing = False

    def wanted(self, platform: Platform, task_type: str) -> bool:
        if time.monotonic() >= self._refresh_at:
            self._refresh(platform)
        return task_type in self._types

    def _refresh(self, platform: Platform) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._refresh_at:
                return  # another thread refreshed meanwhile
            self._refresh_at = now + platform.settings.profile_poll_interval_s
            try:
                names = platform.redis().hkeys(platform.keys.profile_requests)
            except Exception as exc:  # Redis away: the task's own bookkeeping will say so; profiling waits
                log.debug("profile requests not read: %s", exc)
                return
            self._types = frozenset(_text(n) for n in names)

    def forget(self, task_type: str) -> None:
        """Drop ``task_type`` until the next refresh (its runs were all claimed)."""
        self._types = self._types - {task_type}

    def profiler_available(self) -> bool:
        if importlib.util.find_spec("pyinstrument") is not None:
            return True
        if not self._warned_missing:
            self._warned_missing = True
            log.warning("a profile was requested but pyinstrument is not installed in this worker "
                        "(pip install 'meetingtasks[profile]'); its runs are left to other workers")
        return False


GATE = ProfileGate()


def profiled(platform: Platform, task_type: str, task_id: str,
             handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``handler`` itself, or, when this run claims one of the requested runs of ``task_type``, ``handler``
    under the sampling profiler with its profile saved when it returns or raises."""
    if not GATE.profiler_available():
        return handler
    profiles = Profiles(platform)
    try:
        claimed = profiles.claim(task_type)
    except Exception as exc:  # never a reason for the task to fail
        log.warning("profile of %s not claimed: %s", task_type, exc)
        return handler
    if not claimed:
        GATE.forget(task_type)
        return handler

    def run(payload: Any) -> Any:
        from pyinstrument import Profiler

        profiler = Profiler(interval=SAMPLE_INTERVAL_S, async_mode="disabled")
        started_at, error = time.time(), None
        profiler.start()
        try:
            return handler(payload)
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            session = profiler.stop()
            _save(profiles, Profile(
                id=uuid.uuid4().hex, task_type=task_type, task_id=task_id, worker=_worker(), started_at=started_at,
                duration_s=session.duration, error=error,
                text=profiler.output_text(unicode=True, color=False), session=merged_samples(session.to_json()),
            ))

    return run


def merged_samples(session: dict[str, Any]) -> dict[str, Any]:
    """``session`` with the samples of one call stack merged into one record, their times summed.

    pyinstrument keeps a record per sample (1 ms): a 200 ms run under a prefork child's deep stack, every
    identifier a full path, is about a megabyte, past ``profile_max_bytes``, and the flame view would be lost.
    The call tree (what pyinstrument's text and our flame view draw) sums time per stack and does not depend
    on sample order, so merging loses nothing they show; only a timeline of the run would, and none is drawn.
    """
    records = session.get("frame_records")
    if not isinstance(records, list):
        return session
    merged: dict[tuple[str, ...], float] = {}
    for stack, time_s in records:
        key = tuple(stack)
        merged[key] = merged.get(key, 0.0) + float(time_s)
    return {**session, "frame_records": [[list(stack), time_s] for stack, time_s in merged.items()]}


def _save(profiles: Profiles, profile: Profile) -> None:
    try:
        profiles.save(profile)
        log.info("profiled %s task %s (%.1f ms)", profile.task_type, profile.task_id, profile.duration_s * 1000)
    except Exception as exc:
        log.warning("profile of %s task %s not saved: %s", profile.task_type, profile.task_id, exc)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"  # at the run: a prefork child's own pid


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

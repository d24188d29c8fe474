"""The status record's one definition: its states, which of them are final, its fields, the history line and
the published event. Python code uses the names below; the Lua scripts get the same rules from
:func:`lua_definitions`, which :mod:`meetingtasks.lua` prepends to every script that declares ``record`` in its
``-- prelude:`` line. A new state, a new terminal state or a change of the history or event shape is so one
edit here (``tests/lua/test_prelude.py`` checks that both sides agree).

This module imports nothing of the platform: the Lua loader depends on it, and the status store on both.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Status(StrEnum):
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


class Phase(StrEnum):
    """Where a task is, in the coarse sense a person reads first (a page colours a status by it, the per-minute
    rollup counts outcomes by it): waiting its turn, running, or ended well, badly or by a cancel."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The phase of every state (a new state gets one here); whether a state is final follows from it.
PHASES: dict[Status, Phase] = {
    Status.SCHEDULED: Phase.WAITING, Status.QUEUED: Phase.WAITING,
    Status.STARTED: Phase.RUNNING, Status.RETRYING: Phase.RUNNING,
    Status.SUCCEEDED: Phase.SUCCEEDED,
    Status.FAILED: Phase.FAILED, Status.DEAD_LETTERED: Phase.FAILED, Status.TIMED_OUT: Phase.FAILED,
    Status.CANCELLED: Phase.CANCELLED,
}
#: The phases a task ends in.
ENDED = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
#: Final states (those in an :data:`ENDED` phase): a record in one refuses every later transition unless forced
#: (dead-letter replay).
TERMINAL = frozenset(status for status, phase in PHASES.items() if phase in ENDED)
#: :data:`TERMINAL` as plain strings, for code comparing raw event or hash values.
TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)


def phase_of(status: str) -> str:
    """The phase of a state given by name; ``""`` for a name that is no state (a page shows it unstyled)."""
    try:
        return PHASES[Status(status)].value
    except ValueError:
        return ""


def page_definitions() -> dict[str, Any]:
    """What a web page needs of the record, as JSON: the states in order, the terminal ones, and each state's
    phase (the gateway injects it into its page, see :mod:`meetingtasks.gateway.page`)."""
    return {"statuses": [s.value for s in Status], "terminal": sorted(TERMINAL_NAMES),
            "phases": {s.value: PHASES[s].value for s in Status}}


#: Fields every record has once written (``id`` is the key's suffix, not a field).
RECORD_FIELDS = ("type", "service", "priority", "queue", "status", "attempt", "created_at", "updated_at", "history")
#: Fields a record may have: the outcome, progress, the worker's, the poison guard's count, finalising marks.
OPTIONAL_FIELDS = ("result", "error", "error_type", "progress", "progress_message", "worker", "wait_s", "run_s",
                   "retry_in_s", "deliveries", "cancel_requested_at", "deadline", "finalized", "on_success",
                   "on_failure", "batch")
#: Record fields a status event carries besides its fixed head (op, id, status, time, attempt).
EVENT_FIELDS = frozenset(
    {"type", "service", "priority", "result", "error", "error_type", "progress", "progress_message", "wait_s",
     "run_s", "retry_in_s"}
)
#: The ``op`` of every status event on the status channel.
EVENT_OP = "status"


def history_line(status: str, time_s: float | str, attempt: int | str) -> str:
    """One line of the ``history`` field: ``"<STATUS> <epoch seconds> <attempt>\\n"``. ``time_s`` as a float is
    written with ``repr`` (what the scripts receive as their time argument)."""
    when = repr(time_s) if isinstance(time_s, float) else time_s
    return f"{status} {when} {attempt}\n"


def parse_history(text: str) -> list[tuple[Status, float, int]]:
    """The ``history`` field as (status, epoch seconds, attempt) per transition, oldest first."""
    out: list[tuple[Status, float, int]] = []
    for line in text.splitlines():
        name, when, attempt = line.split(" ")
        out.append((Status(name), float(when), int(attempt)))
    return out


def status_event(task_id: str, status: str, time_s: float, attempt: int) -> dict[str, Any]:
    """The fixed head of a status event, in wire order; callers add :data:`EVENT_FIELDS` they know."""
    return {"op": EVENT_OP, "id": task_id, "status": str(status), "time": time_s, "attempt": attempt}


def lua_definitions() -> str:
    """The Lua side of this module (the generated part of the scripts' prelude):

    * ``MT_TERMINAL``: the terminal states as a set;
    * ``mt_history_line(status, now, attempt)``: one history line (``now``, ``attempt`` as the script got them);
    * ``MT_EVENT_OP``: the ``op`` of a status event (scripts that build it as a table for ``cjson``);
    * ``MT_EVENT_START`` and ``mt_event_after_id(status, now, attempt)``: scripts that concatenate their event
      JSON (the fast paths) write ``MT_EVENT_START .. <id as JSON> .. mt_event_after_id(...) .. <fields> .. '}'``,
      the same head :func:`status_event` gives.
    """
    terminal = ", ".join(f"{name}=true" for name in sorted(TERMINAL_NAMES))
    return (
        "-- Generated from meetingtasks/store/status_schema.py (the status record's one definition): edit it there.\n"
        f"local MT_TERMINAL = {{{terminal}}}\n"
        f"local MT_EVENT_OP = '{EVENT_OP}'\n"
        f"local MT_EVENT_START = '{{\"op\":\"{EVENT_OP}\",\"id\":'\n"
        "local function mt_history_line(status, now, attempt)\n"
        "  return status .. ' ' .. now .. ' ' .. attempt .. '\\n'\n"
        "end\n"
        "local function mt_event_after_id(status, now, attempt)\n"
        "  return ',\"status\":\"' .. status .. '\",\"time\":' .. now .. ',\"attempt\":' .. attempt\n"
        "end\n"
    )

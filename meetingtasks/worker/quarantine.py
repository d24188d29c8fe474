"""Dead-lettering of messages the worker cannot hand to a task: garbage bytes, unknown task names,
undecodable bodies, hard time limits. Runs in the worker's main process."""

from __future__ import annotations

import json
import logging
from typing import Any

from meetingtasks.core.message import describe, dumps, seal_envelope, strip_fetch_headers
from meetingtasks.core.priority import parse_queue
from meetingtasks.core.registry import REGISTRY
from meetingtasks.core.secret_fields import keyring
from meetingtasks.lua import LuaScript
from meetingtasks.store.deadletter import DeadLetter, letter_id_for
from meetingtasks.store.platform import Platform
from meetingtasks.store.status import Status

log = logging.getLogger(__name__)


def quarantine_raw(platform: Platform, service: str, queue: str, raw: bytes, reason: str, error: str, *,
                   unrecord: tuple[LuaScript, list[str], list[Any]] | None = None) -> str:
    """Dead-letter bytes that are not a message we can run (kept verbatim, not replayable). With ``unrecord``
    (a script, its keys and its arguments) the script runs in the same transaction: the worker uses it to drop
    the item's unacked entry, so it is filed exactly once. Returns what the script returned (a task id, or ''),
    '' without one."""
    letter = DeadLetter(
        id=letter_id_for(None), service=service, reason=reason, error=error, queue=queue,
        message=_text(raw), replayable=False, attempts=0,
    )
    with platform.redis(service).pipeline(transaction=True) as pipe:
        platform.dead_letters.add(pipe, letter)
        if unrecord is not None:
            script, keys, argv = unrecord
            script.queue(pipe, keys, argv)
        replies = pipe.execute()
    log.error("dead-lettered an unreadable item from %s as %s: %s", queue, letter.id, error)
    if unrecord is None:
        return ""
    found = replies[-1]
    return found.decode() if isinstance(found, bytes) else str(found or "")


#: The tags of the leases the fetch script gives the messages it refuses (see lua/prelude/refused.lua).
REFUSED_TAG_PREFIX = "mt-refused:"


def refused_entry_parts(entry: bytes) -> tuple[str, str, bytes] | None:
    """``(queue, reason, raw message)`` of the unacked entry of a message the fetch refused (the format of
    lua/prelude/refused.lua: a JSON object, a newline, the bytes as they were), None if it is not one."""
    head, newline, raw = entry.partition(b"\n")
    if not newline:
        return None
    try:
        parts = json.loads(head)
    except ValueError:
        return None
    if not isinstance(parts, dict) or not isinstance(parts.get("queue"), str) or not isinstance(parts.get("why"), str):
        return None
    return parts["queue"], parts["why"], raw


def file_refused(platform: Platform, pipe: Any, service: str, tag: str, entry: bytes | str) -> None:
    """Queue, on ``pipe`` (the restore sweep's transaction), the dead letter of a message the fetch refused whose
    worker stopped before filing it (its lease ran out): the bytes as they were, the fetch's reason, not
    replayable. Never restored: see lua/prelude/refused.lua."""
    raw = entry if isinstance(entry, bytes) else entry.encode()
    parts = refused_entry_parts(raw)
    if parts is None:
        file_unrestorable(platform, pipe, service, tag, raw, "not a refused message's entry")
        return
    queue, why, message = parts
    letter = DeadLetter(
        id=letter_id_for(None), service=service, reason="MalformedMessage", error=why, queue=queue,
        message=_text(message), replayable=False, attempts=0,
    )
    platform.dead_letters.add(pipe, letter)
    log.error("dead-lettered an unreadable item from %s as %s (its worker stopped before filing it): %s", queue,
              letter.id, why)


def _text(raw: bytes) -> str:
    """Bytes as a dead letter keeps them: UTF-8 where they are, else one character per byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def file_unrestorable(platform: Platform, pipe: Any, service: str, tag: str, entry: bytes | str, problem: str) -> None:
    """Queue, on ``pipe`` (the restore sweep's transaction), the dead letter of an unacked entry that cannot be
    restored: its raw bytes and why, not replayable."""
    raw = entry if isinstance(entry, bytes) else entry.encode()
    letter = DeadLetter(
        id=letter_id_for(None), service=service, reason="UnrestorableEntry",
        error=f"cannot restore unacked entry {tag!r}: {problem}", message=_text(raw), replayable=False, attempts=0,
    )
    platform.dead_letters.add(pipe, letter)
    log.error("dead-lettered unacked entry %s of %s as %s: %s", tag, service, letter.id, problem)


def quarantine_envelope(
    platform: Platform, service: str, envelope: dict[str, Any], reason: str, error: str,
    *, status: Status = Status.DEAD_LETTERED, traceback: str | None = None,
) -> str:
    """Dead-letter a readable message that cannot run; marks its task's status when it has an id."""
    info = describe(envelope)
    spec = REGISTRY.find(info.task_name) if isinstance(info.task_name, str) else None
    secret = spec.secret_fields if spec is not None else ()
    if secret:  # a foreign producer's plain secret is sealed before it is stored again (masked without a key)
        envelope = seal_envelope(envelope, secret, keyring(platform.settings))
        info = describe(envelope)
    parsed = parse_queue(info.queue or "")
    letter = DeadLetter(
        id=letter_id_for(info.task_id), service=service, reason=reason, error=error, task_id=info.task_id,
        task_type=info.task_name, priority=parsed[1].value if parsed else None, queue=info.queue,
        payload=info.payload, attempts=info.retries + 1, message=_stored(envelope), traceback=traceback,
    )
    client = platform.redis(service)
    with client.pipeline(transaction=False) as pipe:
        platform.dead_letters.add(pipe, letter)
        if info.task_id:
            platform.status.transition(pipe, info.task_id, status, attempt=info.retries + 1,
                                       fields={"error": error, "error_type": reason, "type": info.task_name,
                                               "service": service})
        pipe.execute()
    log.error("dead-lettered message %s (%s) from %s: %s", letter.id, info.task_name, info.queue, error)
    return letter.id


def _stored(envelope: dict[str, Any]) -> str:
    """The message as the dead letter keeps it: without the per-delivery fetch headers."""
    copy = {**envelope, "headers": dict(envelope.get("headers") or {})}
    return dumps(strip_fetch_headers(copy)).decode()

"""Celery's consumer with every "cannot run this message" path ending in the dead-letter queue."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed, DecodeError
from kombu.serialization import prepare_accept_content

from meetingtasks.core.message import dumps
from meetingtasks.core.signing import SIGNED_CONTENT_TYPE, binding_refusal, content_refusal
from meetingtasks.store.deadletter import format_traceback
from meetingtasks.worker.quarantine import quarantine_envelope, quarantine_raw

log = logging.getLogger(__name__)

#: Errors of the broker connection or of Redis itself, raised while a message is taken: never the message's fault.
_INFRASTRUCTURE_ERRORS = (redis.RedisError, OSError)

#: Celery task events (for Flower) are sent in batches at most this often instead of on every loop tick:
#: each flush is a blocking publish on the event loop, which stock Celery pays several times per task.
EVENT_FLUSH_INTERVAL_S = 0.1
EVENT_BUFFER_LIMIT = 1000


class PlatformConsumer(Consumer):  # type: ignore[misc]
    _mt_flush_pending = False

    def on_send_event_buffered(self) -> None:
        if self.hub and not self._mt_flush_pending:
            self._mt_flush_pending = True
            self.hub.call_later(EVENT_FLUSH_INTERVAL_S, self._mt_flush_events)

    def _mt_flush_events(self) -> None:
        self._mt_flush_pending = False
        self._flush_events()

    def _quarantine(self, message: Any, reason: str, error: str) -> None:
        platform = getattr(self.app, "mt_platform", None)
        raw = getattr(message, "_raw", None)
        if platform is None or not isinstance(raw, dict):
            return
        quarantine_envelope(platform, self.app.mt_service, raw, reason, error)

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        on_task_received = super().create_task_handler(*args, **kwargs)
        accepted = prepare_accept_content(self.app.conf.accept_content)

        def on_task_received_guarded(message: Any) -> Any:
            try:
                return on_accepted_task_received(message)
            except _INFRASTRUCTURE_ERRORS:
                raise  # not the message's fault: Celery reconnects, the message stays unacked and comes back
            except Exception as exc:
                # Last resort: whatever got past the envelope check (meetingtasks.core.message.check_envelope) and
                # breaks Celery's strategy or request must not escape, or Celery stops the worker
                # ("Unrecoverable error") and the restored message stops the next one too.
                self._last_resort(message, exc)
                return None

        def on_accepted_task_received(message: Any) -> Any:
            # kombu lets "trusted" content types (application/data, application/text, none at all) past the
            # accept list undecoded, and Celery's request then dies on the raw text, taking the worker with it.
            content_type = message.content_type or "application/data"
            if content_type not in accepted:
                refusal = content_refusal(content_type, self.app.conf.accept_content)
                return self.on_invalid_task(None, message, ContentDisallowed(refusal))
            if content_type == SIGNED_CONTENT_TYPE:
                try:
                    body = message.payload  # verifies the signature; kept for Celery's strategy
                except DecodeError as exc:
                    return self.on_decode_error(message, exc)
                mismatch = binding_refusal(message.headers or {}, body)
                if mismatch is not None:
                    return self.on_invalid_task(None, message, InvalidTaskError(mismatch))
            return on_task_received(message)

        return on_task_received_guarded

    def _last_resort(self, message: Any, exc: Exception) -> None:
        error = f"the worker could not take this message: {type(exc).__name__}: {exc}"
        log.exception("refusing message %s: %s", getattr(message, "delivery_tag", "?"), error)
        if getattr(message, "acknowledged", False):
            return  # already handed on or settled by Celery: nothing left to dead-letter
        platform = getattr(self.app, "mt_platform", None)
        raw = getattr(message, "_raw", None)
        try:
            if platform is not None:
                filed = False
                if isinstance(raw, dict):
                    try:
                        quarantine_envelope(platform, self.app.mt_service, raw, "InvalidTaskMessage", error,
                                            traceback=format_traceback(exc))
                        filed = True
                    except _INFRASTRUCTURE_ERRORS:
                        raise
                    except Exception:  # a shape even the letter's description trips over: filed byte for byte
                        log.exception("could not describe message %s; filing its bytes",
                                      getattr(message, "delivery_tag", "?"))
                if not filed:
                    body = dumps(raw) if isinstance(raw, dict) else (
                        message.body if isinstance(message.body, bytes) else str(message.body).encode())
                    quarantine_raw(platform, self.app.mt_service, "", body, "InvalidTaskMessage", error)
            message.ack()
        except Exception:
            # Not filed: left unacked, the restore sweep brings it back for another try.
            log.exception("could not dead-letter message %s", getattr(message, "delivery_tag", "?"))

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._quarantine(message, "DecodeError",
                         f"cannot decode body ({message.content_type}, {message.content_encoding}): {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._quarantine(message, "UnknownMessage", "message has no 'task' header (not Celery protocol v2)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task")
        self._quarantine(message, "UnknownTaskType",
                         f"unknown task type {name!r} for service {self.app.mt_service!r}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._quarantine(message, "InvalidTaskMessage", f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)

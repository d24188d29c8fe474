"""kombu's Redis transport with a guard on every fetched item.

Stock kombu decodes a popped item inside ``_brpop_read``; garbage bytes raise there and the worker dies
with the item already gone. Our client checks the BRPOP reply first: anything that is not a task
envelope within the size limit is dead-lettered with the raw bytes, and kombu sees an empty poll.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

from meetingtasks.message import MalformedMessage, check_envelope
from meetingtasks.platform import Platform
from meetingtasks.worker.quarantine import quarantine_raw

log = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    def _get_client(self) -> Any:
        base = super()._get_client()
        if not isinstance(base, type):
            return base  # global_keyprefix clients are partials; we never configure one
        channel = self

        class GuardedRedis(base):  # type: ignore[misc, valid-type]
            def parse_response(self, connection: Any, command_name: str | bytes, **options: Any) -> Any:
                response = super().parse_response(connection, command_name, **options)
                if command_name == "BRPOP" and response and not channel.accept_item(response[0], response[1]):
                    return None
                return response

        return GuardedRedis

    def accept_item(self, key: bytes | str, item: bytes | str) -> bool:
        """True if ``item`` may go on to Celery; otherwise it has been dead-lettered."""
        options = self.connection.client.transport_options
        platform: Platform | None = options.get("mt_platform")
        if platform is None:
            return True
        raw = item if isinstance(item, bytes) else item.encode()
        try:
            check_envelope(raw, platform.settings.max_message_bytes)
        except MalformedMessage as exc:
            queue = key.decode() if isinstance(key, bytes) else key
            try:
                quarantine_raw(platform, options["mt_service"], queue, raw, "MalformedMessage", str(exc))
            except Exception:
                # The item is already popped: if it cannot be filed, push it back rather than lose it.
                log.exception("could not dead-letter an item from %s; pushing it back", queue)
                self.client.lpush(queue, raw)
            return False
        return True


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel

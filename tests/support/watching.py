"""Watching what reaches Redis and its subscribers: every command (``MONITOR``), Celery's task events."""

from __future__ import annotations

import threading
from typing import Any

import redis
from pydantic import SecretStr

from meetingtasks.operations.flower import create_flower_app
from meetingtasks.store.platform import Platform
from tests.support.waiting import wait_for


class Monitor:
    """Every command Redis receives while it runs (``MONITOR`` on its own connection, in a thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.commands: list[str] = []
        self._parsed: list[dict[str, Any]] = []
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            for command in monitor.listen():
                self.commands.append(command["command"])
                self._parsed.append(command)
                if self._stopping.is_set():
                    return

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        poke = redis.Redis.from_url(self.url)
        poke.ping()  # the listener sees one more command and ends
        poke.close()
        self._thread.join(10)

    def containing(self, text: str) -> list[str]:
        return [c for c in self.commands if text in c]

    def parsed(self) -> list[dict[str, Any]]:
        """The commands as redis-py parses MONITOR's lines (``command``, ``client_type`` 'lua' for a script's)."""
        return list(self._parsed)


class TaskEventReceiver:
    """Celery's task events as Flower receives them: a real event receiver on the broker, in a thread, from its
    subscription (entered once Redis counts its pattern) until the block ends. Yields the events received."""

    def __init__(self, platform: Platform, r: redis.Redis) -> None:
        self.r = r
        app = create_flower_app(platform.settings.model_copy(update={"flower_basic_auth": SecretStr("ops:pw")}))
        self.captured: list[dict[str, Any]] = []
        self._connection = app.connection_for_read()
        self._receiver = app.events.Receiver(self._connection, handlers={"*": self.captured.append})
        self._thread = threading.Thread(
            target=lambda: self._receiver.capture(limit=None, timeout=None, wakeup=False), daemon=True)

    def __enter__(self) -> list[dict[str, Any]]:
        patterns = int(self.r.pubsub_numpat())  # a worker's own subscriptions (its control box) count too
        self._thread.start()
        wait_for(lambda: int(self.r.pubsub_numpat()) > patterns, 20, message="the event receiver to subscribe")
        return self.captured

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)
        self._connection.release()

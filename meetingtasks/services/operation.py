"""One run of a meeting-system handler, made idempotent: a task delivered twice (its worker died, a retry
after a partial run) changes nothing twice and publishes nothing twice.

Three rules, all keyed by the running task's id (:func:`meetingtasks.worker.current.current_task_id`):

1. **Mutations record their outcome atomically.** Every store change is a Lua script file loaded with
   :func:`once_script` (``meetingtasks/services/lua/``): it first looks for its outcome in the task's operation
   hash (``Keys.operation``); if the outcome is there it returns it untouched, else it changes the domain keys
   *and* writes the outcome in the same call. A second run therefore gets the first run's outcome, never a
   second change.
2. **New ids come from the task id** (:meth:`Operation.derive_id`), and secrets are drawn once and kept in
   the operation hash (:meth:`Operation.once`), so a second run names the same user, meeting or token.
3. **Events get deterministic ids** (:meth:`Operation.emit`); the publisher appends an id once
   (``event_id_ttl_s``), so a second run re-publishing the same outcome publishes nothing new.

The handler's result is kept too (:meth:`Operation.remember`); a run that finds it returns it at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import redis

from meetingtasks.core.message import new_id
from meetingtasks.core.secret_fields import is_sealed, require_keyring, seal_result
from meetingtasks.events.envelope import Event
from meetingtasks.events.publisher import EventPublisher
from meetingtasks.lua import LuaScript, prelude_names
from meetingtasks.services.settings import meeting_settings
from meetingtasks.store.platform import Platform, get_platform
from meetingtasks.worker.current import current_task_id

#: Namespace of the ids derived from task ids (users, meetings, recordings, event ids).
DERIVED_NAMESPACE = uuid.UUID("3c0f4b8e-2d55-4f6a-9a0e-6f0d7c1b2a93")
_RESULT_FIELD = "result"

#: The meeting services' scripts: one file per store change, and their own prelude parts (``prelude/once.lua``).
SCRIPTS_DIR = Path(__file__).parent / "lua"
_ONCE_PART = "once"


def once_script(name: str) -> LuaScript:
    """The store change ``meetingtasks/services/lua/<name>.lua``, which runs at most once per (task, outcome name):
    its change is a function passed to ``mt_once`` (``prelude/once.lua``), which returns the outcome recorded by a
    first run or runs the change and records its outcome in the same call. Call it with :meth:`Operation.mutate`."""
    script = LuaScript.load(name, SCRIPTS_DIR)
    if _ONCE_PART not in prelude_names((SCRIPTS_DIR / f"{name}.lua").read_text()):
        raise ValueError(f"{name}.lua is not a once-script: its '-- prelude:' line must name '{_ONCE_PART}'")
    return script


class Operation:
    """The running handler's task, on the Redis of ``service`` (where that service's domain state lives)."""

    def __init__(self, service: str, platform: Platform | None = None, task_id: str | None = None) -> None:
        self.platform = platform or get_platform()
        self.service = service
        # Outside a task (no id) every call is a fresh operation: nothing to recognise a second time.
        self.task_id = task_id or current_task_id() or new_id()
        self.redis: redis.Redis = self.platform.redis(service)
        self.key = self.platform.keys.operation(self.task_id)
        self.ttl_s = meeting_settings(self.platform).op_ttl_s
        self._publisher = EventPublisher(self.platform)

    # --- decisions --------------------------------------------------------------------------------------------
    def derive_id(self, name: str) -> str:
        """An id that is the same every time this task runs (a new user's id, a recording's id)."""
        return str(uuid.uuid5(DERIVED_NAMESPACE, f"{self.task_id}\n{name}"))

    def once(self, name: str, make: Callable[[], str], *, secret: bool = False) -> str:
        """A value drawn once per task (a login token): the first run's value on every later run. A ``secret``
        value is kept sealed (see :mod:`meetingtasks.core.secret_fields`) and opened here."""
        field = f"once:{name}"
        ring = require_keyring(self.platform.settings, f"op record {name!r} is secret") if secret else None
        drawn = make() if ring is None else ring.seal(make())
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.key, field, drawn)
            pipe.hget(self.key, field)
            pipe.expire(self.key, self.ttl_s)
            _, value, _ = pipe.execute()
        text = str(value.decode() if isinstance(value, bytes) else value)
        return text if ring is None or not is_sealed(text) else ring.open(text)

    def mutate(self, script: LuaScript, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a :func:`once_script`; its JSON outcome decoded. ``name`` tells apart the task's mutations."""
        raw = script(self.redis, [self.key, *keys], [f"m:{name}", self.ttl_s, *args])
        return orjson.loads(raw)

    # --- result -----------------------------------------------------------------------------------------------
    def cached_result(self) -> Any | None:
        raw = self.redis.hget(self.key, _RESULT_FIELD)
        return None if raw is None else orjson.loads(raw)

    def remember(self, result: Any) -> Any:
        """Keep the handler's result (its secrets sealed); returns it as kept, as :meth:`cached_result` will."""
        result = seal_result(result, lambda: require_keyring(self.platform.settings, "a result has secrets"))
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, _RESULT_FIELD, orjson.dumps(result))
            pipe.expire(self.key, self.ttl_s)
            pipe.execute()
        return result

    # --- events -----------------------------------------------------------------------------------------------
    def event_id(self, event_type: str, discriminator: str = "") -> str:
        return str(uuid.uuid5(DERIVED_NAMESPACE, f"{self.task_id}\nevent\n{event_type}\n{discriminator}"))

    def emit(self, channel: str, event_type: str, payload: Mapping[str, Any], *, discriminator: str = "") -> Event:
        """Publish an event whose id is fixed by this task: a second run publishes nothing new.
        ``discriminator`` tells apart several events of one type from one run (one per participant)."""
        return self._publisher.publish(channel, event_type, {k: v for k, v in payload.items() if v is not None},
                                       source=self.service, event_id=self.event_id(event_type, discriminator))


def run_once(service: str, body: Callable[[Operation], Any]) -> Any:
    """Run a handler body as an :class:`Operation`: a finished run's result is returned as it was."""
    op = Operation(service)
    cached = op.cached_result()
    if cached is not None:
        return cached
    return op.remember(body(op))

"""Subscriptions: "on this channel's event type, dispatch that task type with the payload I return".

Declared with :func:`on_event` in a service's subscription module (the one its application declared, e.g.
``meetingtasks/services/<svc>/events.py``) or in any module given to ``meetingtasks bridge --include``. The
decorated function takes the :class:`Event` and returns the payload of the task to dispatch (a mapping or the
task's pydantic model), ``None`` to skip the event, or a list of payloads to dispatch several tasks of the
type (one per participant, say).

Each (event, subscription, index) has a deterministic task id (:meth:`Subscription.task_id`): the bridge
checks that id's status record to tell whether an event already triggered a subscription, so an event
delivered twice never triggers twice. A replay passes a ``generation`` of its own into that id.
"""

from __future__ import annotations

import importlib
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from meetingtasks.core.errors import ConfigurationError, UnknownTaskType
from meetingtasks.core.priority import Priority
from meetingtasks.core.registry import REGISTRY, SERVICE_TABLE, import_modules, load_builtin_types
from meetingtasks.events.channels import check_channel, check_event_type
from meetingtasks.events.envelope import Event

F = TypeVar("F", bound=Callable[..., Any])
#: Namespace of the task ids the bridge gives triggered tasks.
TRIGGER_NAMESPACE = uuid.UUID("0d6b5f8e-7a44-4e0b-b1c5-2f9f1f4f6a20")


@dataclass(frozen=True)
class Subscription:
    name: str
    channel: str
    event_type: str
    task_type: str
    priority: Priority | None
    handler: Callable[[Event], Any]
    declared_service: str | None = None

    @property
    def service(self) -> str:
        """The subscribing service: the one whose declared subscription module holds it, else the task type's service.
        The bridge files this subscription's dead letters under it."""
        return self.declared_service or REGISTRY.get(self.task_type).service

    def payloads(self, event: Event) -> list[Any]:
        """The payloads of the tasks ``event`` triggers (empty when the function returned ``None``)."""
        result = self.handler(event)
        if result is None:
            return []
        if isinstance(result, list | tuple):
            return [p for p in result if p is not None]
        return [result]

    def task_id(self, event_id: str, index: int = 0, generation: int = 0) -> str:
        """The id of the ``index``-th task ``event_id`` triggers through this subscription.

        ``generation`` 0 is the bridge's own run; each replay (:mod:`meetingtasks.events.replay`) runs
        under a generation of its own, so its ids differ from every earlier run's and it is not taken for
        a duplicate of them."""
        suffix = f"\n{generation}" if generation else ""  # generation 0 keeps the ids the bridge always gave
        return str(uuid.uuid5(TRIGGER_NAMESPACE, f"{event_id}\n{self.name}\n{index}{suffix}"))


class SubscriptionTable:
    def __init__(self) -> None:
        self._by_name: dict[str, Subscription] = {}
        self._by_event: dict[tuple[str, str], tuple[Subscription, ...]] = {}
        self._lock = threading.Lock()

    def register(self, sub: Subscription) -> None:
        with self._lock:
            self._by_name[sub.name] = sub  # a re-imported module replaces its own entries
            index: dict[tuple[str, str], list[Subscription]] = {}
            for item in self._by_name.values():
                index.setdefault((item.channel, item.event_type), []).append(item)
            self._by_event = {key: tuple(subs) for key, subs in index.items()}

    def for_event(self, channel: str, event_type: str) -> tuple[Subscription, ...]:
        return self._by_event.get((channel, event_type), ())

    def all(self) -> list[Subscription]:
        return list(self._by_name.values())

    def get(self, name: str) -> Subscription:
        return self._by_name[name]


SUBSCRIPTIONS = SubscriptionTable()


def on_event(
    channel: str, event_type: str, *, dispatch: str, priority: Priority | str | None = None
) -> Callable[[F], F]:
    """Declare that ``event_type`` on ``channel`` dispatches a task of type ``dispatch``.

    The decorated function takes the :class:`Event` and returns the task's payload, ``None`` to skip, or a
    list of payloads. ``priority`` overrides the task type's default. Unknown channels or event types fail
    at import with a one-line error; an unknown task type fails when the bridge starts.
    """
    check_event_type(check_channel(channel), event_type)
    prio = Priority.parse(priority, Priority.NORMAL) if priority is not None else None

    def decorate(func: F) -> F:
        module = func.__module__
        declared = next((svc.name for svc in SERVICE_TABLE.specs() if svc.events_module == module), None)
        SUBSCRIPTIONS.register(Subscription(
            name=f"{module}:{func.__qualname__}",
            channel=channel,
            event_type=event_type,
            task_type=dispatch,
            priority=prio,
            handler=func,
            declared_service=declared,
        ))
        return func

    return decorate


def load_subscriptions(includes: Iterable[str] = ()) -> list[Subscription]:
    """Import every declared service's subscription module and ``includes``; check that every subscription
    dispatches a known task type (one :class:`ConfigurationError` listing the ones that do not)."""
    load_builtin_types()
    import_modules(includes)
    for service in SERVICE_TABLE.specs():  # also those the includes declared
        for module in (service.tasks_module, service.events_module):
            if module:
                importlib.import_module(module)
    problems = []
    for sub in SUBSCRIPTIONS.all():
        try:
            REGISTRY.get(sub.task_type)
        except UnknownTaskType as exc:
            problems.append(f"{sub.name} ({sub.channel}/{sub.event_type}): {exc}")
    if problems:
        raise ConfigurationError("subscriptions dispatch unknown task types: " + " | ".join(problems))
    return SUBSCRIPTIONS.all()

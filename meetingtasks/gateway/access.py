"""What a gateway client may submit, and as whom: the gateway's authorization policy.

Default deny: a client may submit only task types declared ``task_type(..., client=True)``, narrowed further
by ``gateway_task_types`` when the operator sets it (the list never opens a type that is not declared client).
Any other name, internal or unknown, gets the same refusal, with a hint drawn from the client types only,
so internal type names cannot be probed.

A client type that acts on a user's own resources names the payload field holding that user
(``subject_field``): the field is set to the token's subject when the payload leaves it out or gives null,
and a payload naming anyone else is refused before anything is queued. The identity comes from the token,
never from the payload.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from meetingtasks.core.errors import MeetingTasksError
from meetingtasks.core.registry import REGISTRY, TaskTypeSpec, load_builtin_types

log = logging.getLogger(__name__)


class AccessDenied(MeetingTasksError):
    """A submit the client may not make; the message is the one line the client gets."""


class ClientAccess:
    def __init__(self, narrowed_to: Iterable[str] = ()) -> None:
        #: The operator's narrowing of the client types (``gateway_task_types``); empty: all of them.
        self.narrowed_to = frozenset(narrowed_to)
        load_builtin_types()
        closed = sorted(name for name in self.narrowed_to if self.spec(name) is None)
        if closed:  # the list narrows the client types, it never opens another one: say so at start-up
            log.warning("gateway: MEETINGTASKS_GATEWAY_TASK_TYPES names %s, not declared task_type(..., "
                        "client=True) (or not loaded): clients cannot submit them", ", ".join(closed))

    def spec(self, name: str) -> TaskTypeSpec | None:
        """The spec of ``name`` if clients may submit it, else ``None`` (unknown and internal alike)."""
        spec = REGISTRY.find(name)
        if spec is None or not spec.client or (self.narrowed_to and name not in self.narrowed_to):
            return None
        return spec

    def types(self) -> list[TaskTypeSpec]:
        """Every type clients may submit (what ``/types`` lists)."""
        return [s for s in REGISTRY.client_types() if self.spec(s.name) is s]

    def check(self, name: str, payload: dict[str, Any], subject: str) -> dict[str, Any]:
        """The payload to queue for ``subject``'s submit of ``name``; :class:`AccessDenied` if it may not."""
        spec = self.spec(name)
        if spec is None:
            close = difflib.get_close_matches(name, [s.name for s in self.types()], n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see /types"
            raise AccessDenied(f"task type {name!r} is not open to gateway clients ({hint})")
        field = spec.subject_field
        if field is None:
            return payload
        key = _input_key(spec, field)
        named = payload.get(key)
        if named is None:
            payload = {**payload, key: subject}
        elif named != subject:
            raise _naming_another(field, named, subject)
        # The raw key is not the whole story: pydantic may read the field from an alias or have a "before"
        # validator fill it from another key. What binds is the value the handler will get: checked on the
        # validated model (one more validation per submit, only for types with a subject field). A payload that
        # does not validate is left to the dispatcher, which refuses it with its own message.
        try:
            validated = getattr(spec.payload_model.model_validate(payload), field)
        except ValidationError:
            return payload
        if validated != subject:
            raise _naming_another(field, validated, subject)
        return payload


def _input_key(spec: TaskTypeSpec, field: str) -> str:
    """The payload key pydantic reads ``field`` from: its validation alias or alias when one is a plain name."""
    info = spec.payload_model.model_fields[field]
    for alias in (info.validation_alias, info.alias):
        if isinstance(alias, str):
            return alias
    return field


def _naming_another(field: str, named: Any, subject: str) -> AccessDenied:
    return AccessDenied(f"payload field {field} names {str(named)[:80]!r}, but this connection acts for "
                        f"{subject!r} (the token's subject): leave it out or give your own id")

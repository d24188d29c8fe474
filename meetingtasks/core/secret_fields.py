"""Secret fields: the one module that decides which values are secret, and seals, opens and masks them.

A payload field is secret when its model types it ``pydantic.SecretStr`` (or ``SecretStr | None``) or marks it
``Annotated[str, Secret]``; a result value is secret when the handler returns it as a ``SecretStr`` (a field of
a returned model, or a value of a returned dict). Only top-level fields count: nested models are not searched.

A secret leaves the producing process sealed: the string ``mtenc1:<key id>:<Fernet token>``, where the key id
is the first 8 hex digits of the SHA-256 of the key. Keys come from ``MEETINGTASKS_ENCRYPTION_KEYS``
(comma-separated Fernet keys: the first seals, all open, so a key is rotated by putting a new one first), else
the file ``encryption.keys`` in the data directory that ``meetingtasks up`` writes. Sealed values are opened
only by the worker that runs the task (for the handler) and by whoever reads the result for its submitter
(``TaskHandle.wait()``, the gateway); everything that shows a sealed or secret value shows ``***``.

Failure behaviour: with no key configured, a secret is refused (dispatch raises
:class:`~meetingtasks.core.errors.DispatchError`, a worker of a service with secret types does not start), never sent
or stored in plain text; malformed keys are a one-line :class:`ConfigurationError` at start-up. A sealed value
that no configured key opens (unknown key id, tampered) gets its task dead-lettered as
:class:`UndecryptableSecret`, naming the key id, the ciphertext kept for a replay.

A producer that sends a secret field in plain text (celery-node, a plain Celery client) still gets its task
run: the worker accepts the plain value, and seals it before it stores the payload again (retry, dead letter).
A plain value that happens to start with ``mtenc1:`` is taken for a sealed one (and refused if it does not open).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import threading
import types
import typing
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from cryptography.fernet import Fernet, InvalidToken
from pydantic import BaseModel, SecretStr

from meetingtasks.core.errors import ConfigurationError, MeetingTasksError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from meetingtasks.core.settings import Settings

#: How a sealed value starts; the version says how the rest reads.
PREFIX = "mtenc1:"
#: What every display shows in place of a secret.
MASK = "***"
#: Environment variable and data-directory file of the keys.
KEYS_ENV = "MEETINGTASKS_ENCRYPTION_KEYS"
KEYS_FILE = "encryption.keys"
GENERATE_HINT = ("generate one with `python -c 'from cryptography.fernet import Fernet; "
                 "print(Fernet.generate_key().decode())'`")


class _SecretMarker:
    """The marker of ``Annotated[str, Secret]``: the field is sealed like a ``SecretStr``."""

    def __repr__(self) -> str:
        return "Secret"


Secret = _SecretMarker()


class UndecryptableSecret(MeetingTasksError):
    """A sealed value no configured key opens (unknown key id, wrong key, tampered); names the key id."""


# --- which fields are secret ------------------------------------------------------------------------------------
_plans: dict[type[BaseModel], tuple[str, ...]] = {}


def _is_secret(annotation: Any, metadata: Sequence[Any]) -> bool:
    if any(m is Secret or isinstance(m, _SecretMarker) for m in metadata):
        return True
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(arg is SecretStr for arg in typing.get_args(annotation))
    return False


def secret_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The names of ``model``'s secret fields (empty for most types); decided once per model, then one dict
    lookup (the whole cost of secrecy for a type without secret fields)."""
    plan = _plans.get(model)
    if plan is None:
        plan = tuple(name for name, info in model.model_fields.items() if _is_secret(info.annotation, info.metadata))
        _plans[model] = plan
    return plan


# --- keys -------------------------------------------------------------------------------------------------------
def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def parse_keys(text: str, where: str = KEYS_ENV) -> list[bytes]:
    """The keys in ``text`` (comma-separated), or a one-line :class:`ConfigurationError` naming the bad one."""
    keys: list[bytes] = []
    for n, part in enumerate((p.strip() for p in text.split(",")), start=1):
        if not part:
            continue
        try:
            raw = base64.urlsafe_b64decode(part.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            raise ConfigurationError(
                f"{where}: key {n} is not 32 bytes of URL-safe base64 (a Fernet key); {GENERATE_HINT}"
            )
        keys.append(part.encode("ascii"))
    if not keys:
        raise ConfigurationError(f"{where} is empty; {GENERATE_HINT}")
    return keys


class Keyring:
    """The configured keys: the first seals, any opens the values sealed with it."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._fernets = {key_id(k): Fernet(k) for k in keys}
        self.sealing_id = key_id(keys[0])
        self._sealer = self._fernets[self.sealing_id]
        self._head = f"{PREFIX}{self.sealing_id}:"

    @property
    def key_ids(self) -> list[str]:
        return list(self._fernets)

    def seal(self, text: str) -> str:
        return self._head + self._sealer.encrypt(text.encode()).decode("ascii")

    def open(self, value: str) -> str:
        """The plain text of a sealed ``value``; :class:`UndecryptableSecret` naming its key id if none opens."""
        kid, _, token = value[len(PREFIX):].partition(":")
        fernet = self._fernets.get(kid)
        if fernet is None:
            raise UndecryptableSecret(
                f"sealed with key id {kid!r}, which is not among the configured keys ({', '.join(self._fernets)}); "
                f"add that key to {KEYS_ENV}"
            )
        try:
            return fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise UndecryptableSecret(
                f"sealed value with key id {kid!r} does not open: tampered or truncated ciphertext"
            ) from exc


_keyrings: dict[int, tuple[weakref.ref[Any], Keyring | None]] = {}
_lock = threading.Lock()


def keyring(settings: Settings) -> Keyring | None:
    """The keyring of ``settings`` (``MEETINGTASKS_ENCRYPTION_KEYS``, else the data directory's file), ``None``
    when neither is set; read once per settings object. Malformed keys: :class:`ConfigurationError`."""
    cached = _keyrings.get(id(settings))
    if cached is not None and cached[0]() is settings:
        return cached[1]
    ring: Keyring | None = None
    if settings.encryption_keys is not None and settings.encryption_keys.get_secret_value().strip():
        ring = Keyring(parse_keys(settings.encryption_keys.get_secret_value()))
    else:
        path = settings.data_dir / KEYS_FILE
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if text:
            ring = Keyring(parse_keys(text, where=str(path)))
    with _lock:
        if id(settings) not in _keyrings:
            weakref.finalize(settings, _keyrings.pop, id(settings), None)  # no entry outlives its settings
        _keyrings[id(settings)] = (weakref.ref(settings), ring)
    return ring


def require_keyring(settings: Settings, why: str = "a task type has secret fields") -> Keyring:
    """The keyring. With no key configured anywhere, the first process that needs one creates it in the data
    directory, where ``meetingtasks up`` puts it and every process started from the same directory finds it (a
    warning says so: processes elsewhere need the same key). Only when that file cannot be written is a secret
    refused, in one line saying how to make a key: a secret is never sent or stored in plain text."""
    ring = keyring(settings)
    if ring is not None:
        return ring
    try:
        path = generate_keys_file(settings)
    except OSError as exc:
        raise ConfigurationError(
            f"no encryption key ({why}) and none can be created in {settings.data_dir / KEYS_FILE} ({exc.strerror}): "
            f"set {KEYS_ENV}, e.g. {GENERATE_HINT}"
        ) from None
    ring = keyring(settings)
    if ring is None:  # pragma: no cover - the file was just written
        raise ConfigurationError(f"no encryption key ({why}): set {KEYS_ENV}, e.g. {GENERATE_HINT}")
    if path is not None:
        log.warning("no encryption key was configured (%s): created %s; give every process of this deployment "
                    "the same key (%s or that file)", why, path, KEYS_ENV)
    return ring


def generate_keys_file(settings: Settings) -> str | None:
    """Create a key in the data directory (owner-readable only) unless one is configured; the new path, or
    ``None`` when there already was a key (or another process created the file first: its key is the one).
    Raises ``OSError`` when the file cannot be written."""
    import os
    import tempfile

    if keyring(settings) is not None:
        return None
    path = settings.data_dir / KEYS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a process starting at the same moment sees
    # no file or the whole key, and two that race agree on the first one linked.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".encryption-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(Fernet.generate_key().decode("ascii") + "\n")
        try:
            os.link(tmp, path)
            created: str | None = str(path)
        except FileExistsError:
            created = None
    finally:
        os.unlink(tmp)
    _keyrings.pop(id(settings), None)
    return created


# --- sealing, opening, masking ----------------------------------------------------------------------------------
def is_sealed(value: Any) -> TypeGuard[str]:
    return type(value) is str and value.startswith(PREFIX)


def seal_dumped(fields: tuple[str, ...], model: BaseModel, body: dict[str, Any], ring: Keyring) -> dict[str, Any]:
    """``body`` (``model`` dumped as JSON data, secrets shown as pydantic's stars) with each secret field sealed."""
    for name in fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None:
            body[name] = None
        elif is_sealed(value):
            body[name] = value  # sealed already (a replayed or re-dispatched payload): not sealed twice
        else:
            body[name] = ring.seal(str(value))
    return body


def seal_payload(fields: tuple[str, ...], payload: Any, ring: Keyring) -> Any:
    """``payload`` (raw JSON data) with every secret field that is in plain text sealed; anything else as is."""
    if not isinstance(payload, dict):
        return payload
    out = None
    for name in fields:
        value = payload.get(name)
        if isinstance(value, str) and not value.startswith(PREFIX):
            if out is None:
                out = dict(payload)
            out[name] = ring.seal(value)
    return payload if out is None else out


def open_payload(fields: tuple[str, ...], payload: Any, ring: Keyring | None) -> Any:
    """``payload`` with its sealed secret fields opened, for the handler; plain ones are taken as they are."""
    if not isinstance(payload, dict):
        return payload
    out = None
    for name in fields:
        value = payload.get(name)
        if is_sealed(value):
            if ring is None:
                raise UndecryptableSecret(f"field {name!r} is sealed and no key is configured ({KEYS_ENV})")
            if out is None:
                out = dict(payload)
            try:
                out[name] = ring.open(value)
            except UndecryptableSecret as exc:
                raise UndecryptableSecret(f"field {name!r}: {exc}") from None
    return payload if out is None else out


def mask_payload(fields: tuple[str, ...], payload: Any) -> Any:
    """``payload`` with every secret field (plain or sealed) shown as ``***``."""
    if not isinstance(payload, dict):
        return payload
    return {k: (MASK if k in fields and v is not None else v) for k, v in payload.items()}


def seal_result(result: Any, ring_for: Callable[[], Keyring]) -> Any:
    """A handler's result as JSON data with its secrets sealed: a model's secret fields, a dict's ``SecretStr``
    values. ``ring_for()`` gives the keyring, asked only when there is something to seal."""
    if isinstance(result, BaseModel):
        body: dict[str, Any] = type(result).__pydantic_serializer__.to_python(result, mode="json")
        fields = secret_fields(type(result))
        return seal_dumped(fields, result, body, ring_for()) if fields else body
    if type(result) is dict:
        out = None
        for name, value in result.items():
            if isinstance(value, SecretStr):
                if out is None:
                    out = dict(result)
                out[name] = ring_for().seal(value.get_secret_value())
        return result if out is None else out
    return result


_SEALED_TEXT = re.compile(re.escape(PREFIX) + r"[0-9a-f]{8}:[A-Za-z0-9_=-]+")


def mask_text(text: str) -> str:
    """``text`` (a stored message, a log line) with every sealed value in it shown as ``***``."""
    return _SEALED_TEXT.sub(MASK, text) if PREFIX in text else text


def seal_and_mask_result(result: Any, ring_for: Callable[[], Keyring]) -> tuple[Any, Any]:
    """``(stored, shown)``: :func:`seal_result` and :func:`mask_result` of a handler's result in one pass over a
    dict's values (the worker's hot path: about 0.3 us for a small dict with no secret)."""
    if type(result) is not dict:
        stored = seal_result(result, ring_for)
        return stored, mask_result(stored)
    sealed = shown = None
    for name, value in result.items():
        kind = type(value)
        if kind is str:
            if value.startswith(PREFIX):  # sealed already (a run's cached result)
                if shown is None:
                    shown = dict(result)
                shown[name] = MASK
        elif kind is SecretStr or isinstance(value, SecretStr):
            if sealed is None:
                sealed = dict(result)
            if shown is None:
                shown = dict(result)
            sealed[name] = ring_for().seal(value.get_secret_value())
            shown[name] = MASK
    return (result if sealed is None else sealed), (result if shown is None else shown)


def mask_result(result: Any) -> Any:
    """A result with its (top-level) sealed values shown as ``***``: the hot-path form of :func:`mask`, one pass
    over a dict's values; the same object when there is nothing to mask."""
    if type(result) is not dict:
        return mask(result) if type(result) is str else result
    out = None
    for name, value in result.items():
        if type(value) is str and value.startswith(PREFIX):
            if out is None:
                out = dict(result)
            out[name] = MASK
    return result if out is None else out


def open_result(result: Any, ring_for: Callable[[], Keyring | None]) -> Any:
    """A stored result with its (top-level) sealed values opened, for the caller that reads it; the same object,
    without asking ``ring_for()`` for the keyring, when it has none (one pass over a dict's values)."""
    return result if mask_result(result) is result else reveal(result, ring_for())


def mask(value: Any) -> Any:
    """``value`` with every sealed string in it (at any depth) shown as ``***``; the same object when it has none."""
    if type(value) is str:
        return MASK if value.startswith(PREFIX) else value
    if type(value) is dict:
        out = None
        for k, v in value.items():
            m = mask(v)
            if m is not v:
                if out is None:
                    out = dict(value)
                out[k] = m
        return value if out is None else out
    if type(value) is list:
        items = [mask(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def reveal(value: Any, ring: Keyring | None) -> Any:
    """``value`` with every sealed string in it opened (``***`` where no configured key opens it)."""
    if type(value) is str:
        if not value.startswith(PREFIX):
            return value
        if ring is None:
            return MASK
        try:
            return ring.open(value)
        except UndecryptableSecret:
            return MASK
    if type(value) is dict:
        return {k: reveal(v, ring) for k, v in value.items()}
    if type(value) is list:
        return [reveal(v, ring) for v in value]
    return value


def check_worker_keys(settings: Settings, service: str, payload_models: Mapping[str, type[BaseModel]]) -> None:
    """At a worker's start-up: malformed keys, or types of ``service`` with secret fields and no key, are a
    one-line :class:`ConfigurationError` (``payload_models``: type name -> payload model)."""
    ring = keyring(settings)
    needing = sorted(name for name, model in payload_models.items() if secret_fields(model))
    if ring is None and needing:
        require_keyring(settings, f"worker {service}: {', '.join(needing)} have secret fields")

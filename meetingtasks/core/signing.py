"""Message signing: Celery's ``auth`` serializer, on when ``signing_key``, ``signing_cert`` and
``signing_cert_store`` are set.

With signing on, every platform producer (the dispatcher, retries, rate-limit deferrals, the dead letters
kept for replay) signs the body of its task messages with the private key, and the workers of every service
accept only the ``auth`` content type: a body whose signature does not verify against a certificate in the
store is dead-lettered unread, and so is a plain JSON body. The signed format is Celery's own
(``celery.security``)::

    "content-type": "application/data", "content-encoding": "utf-8",
    "body": base64(base64(signer id) SEP base64(signature) SEP "application/json" SEP "utf-8" SEP json body)

where ``SEP`` is the two bytes ``\\x00\\x01``, the signer id is the certificate's issuer and serial number,
and the signature is RSA-PSS over the JSON body. Headers are not signed (Celery signs only the body), so
the platform's bodies name the task type and id they were signed for (:data:`SIGNED_FOR`, in the embed
part of the body) and the worker refuses a body whose headers say otherwise. A signed message can still be
pushed again as it is (a replay): the status record skips it while the task's record says it finished, but
whoever can write to Redis can delete that record too.

Signing is not encryption: anyone who can read Redis reads the bodies. Remote-control commands (revoke,
Flower's inspect) stay JSON; they run no task.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.settings import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from celery import Celery

#: Content type and encoding of a signed body (what Celery's ``auth`` serializer registers).
SIGNED_CONTENT_TYPE = "application/data"
SIGNED_CONTENT_ENCODING = "utf-8"
#: Name of the serializer in kombu's registry and in ``accept_content``.
SERIALIZER_NAME = "auth"
#: Key of the signed body's ``embed`` naming the task type and id the body was signed for. Celery signs only
#: the body, while protocol 2 carries the task name and id in headers that anyone with Redis access can
#: rewrite: without it, a signed body could be re-sent as another task type whose payload model accepts it.
SIGNED_FOR = "mt_signed_for"
_SEPARATOR = b"\x00\x01"


@dataclass(frozen=True)
class MessageSigner:
    """Signs (and verifies) task message bodies as Celery's ``SecureSerializer`` does."""

    serializer: Any  # celery.security.serialization.SecureSerializer, built from the three below
    certificate: Any  # celery.security.certificate.Certificate of the private key
    trusted: Any  # celery.security.certificate.FSCertStore
    digest: str
    content_type = SIGNED_CONTENT_TYPE
    content_encoding = SIGNED_CONTENT_ENCODING

    @property
    def signer_id(self) -> str:
        """How a signed body names its signer: the certificate's issuer and serial number."""
        return str(self.certificate.get_id())

    def sign(self, body: Any) -> str:
        """The signed text of ``body`` (the ``[args, kwargs, embed]`` list), JSON inside."""
        return str(self.serializer.serialize(body))

    def verify(self, text: str | bytes) -> Any:
        """The body of a signed text; raises Celery's ``SecurityError`` saying why when it is not signed by a
        trusted certificate or does not match its signature."""
        from celery.exceptions import SecurityError

        try:
            return self.serializer.deserialize(text)
        except SecurityError as exc:
            raise SecurityError(self.refusal(text) or str(exc)) from None

    def refusal(self, text: str | bytes) -> str | None:
        """Why Celery refused ``text``, in words (its own message for a bad signature is a ``TypeError`` about
        exception classes): found by elimination, after Celery's check has failed."""
        try:
            fields = _unpack(text)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return "not a signed body (Celery's auth format)"
        claimed = signer_of(text) or "?"
        try:
            certificate = self.trusted[base64.b64decode(fields[0])]
        except Exception:  # SecurityError: unknown certificate
            return f"signed by an untrusted certificate ({claimed}): not in MEETINGTASKS_SIGNING_CERT_STORE"
        if certificate.has_expired():
            return f"signed by an expired certificate ({claimed})"
        return f"bad signature: the body does not match its signature by {claimed} (altered, or signed elsewhere)"

    def trusts_itself(self) -> bool:
        try:
            self.trusted[self.signer_id]
        except Exception:  # SecurityError: unknown certificate
            return False
        return True


def signer_for(settings: Settings) -> MessageSigner | None:
    """The process's signer for ``settings``, or ``None`` when signing is off; the files are read once.

    Raises :class:`ConfigurationError` (one line, naming the setting) when a file holds no usable key or
    certificate, the password is wrong, or a certificate has expired.
    """
    if settings.signing_key is None:  # the fast path: Settings guarantees all three or none
        return None
    password = settings.signing_key_password.get_secret_value() if settings.signing_key_password else None
    return _load(settings.signing_key, password, settings.signing_cert, settings.signing_cert_store,
                 settings.signing_digest)


@functools.lru_cache(maxsize=4)
def _load(key: Path, password: str | None, cert: Path | None, store: Path | None, digest: str) -> MessageSigner:
    from celery.exceptions import ImproperlyConfigured

    try:
        from celery.security.certificate import Certificate, FSCertStore
        from celery.security.key import PrivateKey
        from celery.security.serialization import SecureSerializer
    except (ImportError, ImproperlyConfigured) as exc:  # celery.security needs cryptography
        raise ConfigurationError(
            f"message signing needs the cryptography package ({exc}): pip install 'meetingtasks[signing]'"
        ) from None
    assert cert is not None and store is not None  # Settings checked all three are set
    private_key = _read(key, "SIGNING_KEY", lambda text: PrivateKey(text, password=password),
                        "not a PEM RSA private key, or the password (MEETINGTASKS_SIGNING_KEY_PASSWORD) is wrong")
    certificate = _read(cert, "SIGNING_CERT", Certificate, "not a PEM RSA certificate")
    if certificate.has_expired():
        raise ConfigurationError(f"{ENV_PREFIX}SIGNING_CERT={cert}: the certificate has expired")
    try:
        trusted = FSCertStore(str(store))
    except Exception as exc:  # SecurityError (invalid, expired, duplicate), OSError
        raise ConfigurationError(f"{ENV_PREFIX}SIGNING_CERT_STORE={store}: {_one_line(exc)}") from None
    serializer = SecureSerializer(private_key, certificate, trusted, digest=digest, serializer="json")
    signer = MessageSigner(serializer, certificate, trusted, digest)
    _check_pair(signer, cert)
    return signer


def _read(path: Path, setting: str, build: Any, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{ENV_PREFIX}{setting}={path}: cannot read the file ({_one_line(exc)})") from None
    try:
        return build(text)
    except Exception:  # SecurityError, ValueError, TypeError (a password for an unencrypted key)
        raise ConfigurationError(f"{ENV_PREFIX}{setting}={path}: {what}") from None


def _check_pair(signer: MessageSigner, cert: Path) -> None:
    """Sign a probe with the key and verify it with the certificate: a key that does not belong to its
    certificate would have every message dead-lettered on arrival."""
    from celery.security.utils import get_digest_algorithm

    try:
        fields = _unpack(signer.sign([[{"probe": True}], {}, {}]))
        signer.certificate.verify(fields[4], base64.b64decode(fields[1]), get_digest_algorithm(signer.digest))
    except Exception:
        raise ConfigurationError(
            f"{ENV_PREFIX}SIGNING_CERT={cert}: the certificate does not belong to {ENV_PREFIX}SIGNING_KEY"
        ) from None


def install_verifier(app: Celery, signer: MessageSigner) -> None:
    """Make ``app``'s workers run only messages signed by a certificate in the store.

    Registers Celery's ``auth`` serializer (what ``celery.security.register_auth`` does, with this signer)
    and sets ``accept_content=["auth"]``, so a plain JSON (or pickle) body is refused. Remote control stays
    JSON: its messages run no task, and ``cancel`` and Flower need no key for it.
    """
    from kombu.serialization import registry

    if not signer.trusts_itself():
        # The worker signs its own retries and dead letters: it (and its peers) must trust its certificate.
        raise ConfigurationError(
            f"{ENV_PREFIX}SIGNING_CERT ({signer.signer_id}) is not in {ENV_PREFIX}SIGNING_CERT_STORE: "
            "this worker's own retries would be refused; add the certificate to the store"
        )
    registry.register(SERIALIZER_NAME, signer.sign, signer.verify, content_type=SIGNED_CONTENT_TYPE,
                      content_encoding=SIGNED_CONTENT_ENCODING)
    app.conf.update(task_serializer=SERIALIZER_NAME, accept_content=[SERIALIZER_NAME])
    app.control.mailbox.accept = ["json"]
    app.control.mailbox.serializer = "json"


def signed_for(task_name: str, task_id: str) -> str:
    return f"{task_name} {task_id}"


def binding_refusal(headers: Mapping[str, Any], body: Any) -> str | None:
    """Why a verified ``body`` may not run under ``headers`` (it was signed for another task type or id), or
    ``None``. A body without the binding (signed by a stock Celery client with the same key) binds nothing."""
    embed = body[2] if isinstance(body, list | tuple) and len(body) == 3 else None
    claimed = embed.get(SIGNED_FOR) if isinstance(embed, dict) else None
    if claimed is None:
        return None
    expected = signed_for(str(headers.get("task")), str(headers.get("id")))
    if claimed == expected:
        return None
    return f"the signed body was made for {claimed!r}, but the headers say {expected!r} (headers rewritten)"


def content_refusal(content_type: str, accepted: Iterable[str]) -> str:
    """One line saying why a worker that accepts ``accepted`` (serializer names) refuses ``content_type``."""
    names = list(accepted)
    if SERIALIZER_NAME in names:
        return (f"not signed: content type {content_type} is not accepted; message signing is on, so this worker "
                f"runs only signed messages ({SIGNED_CONTENT_TYPE})")
    hint = ""
    if content_type == SIGNED_CONTENT_TYPE:
        hint = "; a signed message? message signing is off on this worker (set MEETINGTASKS_SIGNING_*)"
    return f"content type {content_type} is not accepted (this worker accepts only {', '.join(names)}){hint}"


# --- reading without verifying (display only) ------------------------------------------------------------
def _unpack(text: str | bytes) -> list[bytes]:
    raw = base64.b64decode(text if isinstance(text, bytes) else text.encode("ascii"), validate=True)
    fields = raw.split(_SEPARATOR, 4)
    if len(fields) != 5:
        raise ValueError("not a signed body: expected 5 fields")
    return fields


def unverified_body(text: Any) -> Any:
    """The ``[args, kwargs, embed]`` inside a signed body, WITHOUT checking its signature, or ``None`` when
    it cannot be read. For display only (dead letters, ``dlq show``); workers verify before running."""
    try:
        fields = _unpack(text)
        if fields[2] != b"application/json":
            return None
        return orjson.loads(fields[4])
    except (binascii.Error, ValueError, TypeError, UnicodeEncodeError):
        return None


def signer_of(text: Any) -> str | None:
    """The signer id (certificate issuer and serial) a signed body claims, unverified; ``None`` if unreadable."""
    try:
        return base64.b64decode(_unpack(text)[0]).decode("utf-8", "replace")
    except (binascii.Error, ValueError, TypeError, UnicodeEncodeError):
        return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "strerror", None) or exc).split())

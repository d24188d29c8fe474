"""The blob store: large inputs and outputs (audio, video) travel as ``blob:<id>`` references, never
inside a task message or an event.

Blobs live on the platform's global Redis (``Keys.blob``), each a hash of ``data``, ``content_type``,
``size`` and ``created_at``, and expire after ``blob_ttl_s`` (default one day): long enough for the tasks
that pass them along, short enough that a busy meeting system does not fill Redis with media.

::

    ref = put_blob(wav_bytes, content_type="audio/wav")   # "blob:3f2c..."
    data = get_blob(ref)

A reference that is malformed, unknown or expired raises :class:`BlobNotFound`, a
:class:`~meetingtasks.PermanentError`: a handler given one fails at once with that line, since retrying
cannot bring the data back.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from meetingtasks.core.errors import PermanentError
from meetingtasks.core.message import new_id
from meetingtasks.services.settings import meeting_settings
from meetingtasks.store.platform import Platform, get_platform

PREFIX = "blob:"
_REF = re.compile(r"^blob:([A-Za-z0-9_-]{1,64})$")


class BlobNotFound(PermanentError, LookupError):
    """The reference is malformed, or its blob never existed or has expired."""


class BlobTooLarge(PermanentError, ValueError):
    """The data is over ``blob_max_bytes``."""


@dataclass(frozen=True)
class Blob:
    ref: str
    data: bytes
    content_type: str
    created_at: float


def blob_id(ref: str) -> str:
    """The id in ``blob:<id>``; :class:`BlobNotFound` for anything else."""
    match = _REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise BlobNotFound(f"{ref!r} is not a blob reference (expected blob:<id>)")
    return match.group(1)


def is_blob_ref(value: object) -> bool:
    return isinstance(value, str) and _REF.match(value) is not None


class BlobStore:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def put(self, data: bytes, *, content_type: str = "application/octet-stream", ttl_s: int | None = None,
            blob_id: str | None = None) -> str:
        """Store ``data`` and return its reference. ``blob_id`` makes a retried put land on the same blob."""
        limit = meeting_settings(self.platform).blob_max_bytes
        if len(data) > limit:
            raise BlobTooLarge(f"blob of {len(data)} bytes is over blob_max_bytes={limit}")
        ref_id = blob_id or new_id().replace("-", "")
        key = self.platform.keys.blob(ref_id)
        with self.platform.redis().pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"data": data, "content_type": content_type, "size": len(data),
                                    "created_at": repr(time.time())})
            pipe.expire(key, ttl_s or meeting_settings(self.platform).blob_ttl_s)
            pipe.execute()
        return PREFIX + ref_id

    def get(self, ref: str) -> Blob:
        raw: dict[bytes, bytes] = self.platform.redis().hgetall(self.platform.keys.blob(blob_id(ref)))  # type: ignore[assignment]
        if not raw or b"data" not in raw:
            raise BlobNotFound(
                f"{ref} not found: it never existed or expired (blobs live blob_ttl_s="
                f"{meeting_settings(self.platform).blob_ttl_s}s)"
            )
        return Blob(ref, raw[b"data"], raw.get(b"content_type", b"").decode(),
                    float(raw.get(b"created_at", b"0")))

    def exists(self, ref: str) -> bool:
        return bool(self.platform.redis().exists(self.platform.keys.blob(blob_id(ref))))

    def delete(self, ref: str) -> bool:
        return bool(self.platform.redis().delete(self.platform.keys.blob(blob_id(ref))))


def put_blob(data: bytes, *, content_type: str = "application/octet-stream", ttl_s: int | None = None) -> str:
    """Store ``data`` on the default platform; returns ``blob:<id>``."""
    return BlobStore(get_platform()).put(data, content_type=content_type, ttl_s=ttl_s)


def get_blob(ref: str) -> bytes:
    """The data of ``ref`` on the default platform, or :class:`BlobNotFound`."""
    return BlobStore(get_platform()).get(ref).data

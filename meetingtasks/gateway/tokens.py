"""Gateway tokens: JWTs signed with HMAC-SHA256 (HS256) and the gateway secret.

Claims: ``sub`` (the client id, whose tasks the bearer may see), ``iat`` and ``exp`` (epoch seconds).
Any JWT library verifies them with the same secret; only HS256 is accepted (no ``none``, no key confusion).
The secret comes from ``MEETINGTASKS_GATEWAY_SECRET`` or the data directory (see :func:`require_secret`).

:func:`verify_token` answers every input, of any shape, with the client id or a :class:`TokenError`: the
gateway refuses and counts a bad token; nothing else can leave the auth path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

import orjson

from meetingtasks.core.errors import ConfigurationError, MeetingTasksError
from meetingtasks.core.settings import GATEWAY_SECRET_FILE, Settings, refuse_placeholder

#: Shortest secret accepted: a guessable secret lets anyone mint tokens.
MIN_SECRET_CHARS = 16
CLIENT_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")
#: Longest token read: a minted one is about 200 characters; anything far longer is refused unread.
MAX_TOKEN_CHARS = 4096
_HEADER = {"alg": "HS256", "typ": "JWT"}
_LEEWAY_S = 5


class TokenError(MeetingTasksError):
    """A token is missing, malformed, badly signed or expired; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, signing_input: str) -> str:
    return _b64(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest())


def mint_token(secret: str, client_id: str, ttl_s: float, *, now_s: float | None = None) -> str:
    """A token for ``client_id`` valid for ``ttl_s`` seconds."""
    if not CLIENT_ID.fullmatch(client_id):
        raise ValueError(f"client id {client_id!r}: use 1-128 characters of letters, digits and _ . @ : -")
    if ttl_s <= 0:
        raise ValueError(f"token ttl must be > 0 seconds, got {ttl_s}")
    now = int(time.time() if now_s is None else now_s)
    claims = {"sub": client_id, "iat": now, "exp": now + int(ttl_s)}
    signing_input = _b64(orjson.dumps(_HEADER)) + "." + _b64(orjson.dumps(claims))
    return signing_input + "." + _sign(secret, signing_input)


def verify_token(secret: str, token: str | None, *, now_s: float | None = None) -> str:
    """The client id of a valid token; :class:`TokenError` naming the problem otherwise (for any input)."""
    if not token:
        raise TokenError("no token: pass ?token=... or an Authorization: Bearer header (`meetingtasks token`)")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError(f"malformed token: a JWT is at most {MAX_TOKEN_CHARS} ASCII characters")
    try:
        return _verify(secret, token, now_s)
    except TokenError:
        raise
    except Exception as exc:  # whatever the shape of a hostile token, it is refused, never raised
        raise TokenError(f"malformed token ({type(exc).__name__})") from None


def _verify(secret: str, token: str, now_s: float | None) -> str:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: expected a JWT (header.claims.signature)")
    try:
        header = orjson.loads(_unb64(parts[0]))
        claims = orjson.loads(_unb64(parts[1]))
    except (binascii.Error, ValueError):
        raise TokenError("malformed token: header or claims are not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("token algorithm must be HS256")
    # Bytes, not str: compare_digest refuses str with non-ASCII characters (a TypeError, not a refusal).
    if not hmac.compare_digest(_sign(secret, parts[0] + "." + parts[1]).encode(), parts[2].encode()):
        raise TokenError("bad token signature (minted with another secret?)")
    if not isinstance(claims, dict):
        raise TokenError("malformed token: claims are not an object")
    exp, sub = claims.get("exp"), claims.get("sub")
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not isinstance(sub, str) \
            or not CLIENT_ID.fullmatch(sub):
        raise TokenError("malformed token: needs a client id (sub) and an expiry (exp)")
    now = time.time() if now_s is None else now_s
    if now > exp + _LEEWAY_S:
        raise TokenError(f"token expired {int(now - exp)}s ago: mint a new one")
    return sub


def require_secret(settings: Settings) -> str:
    """The gateway secret, or a one-line :class:`ConfigurationError` saying how to set one."""
    secret = settings.gateway_signing_secret()
    if secret is None:
        raise ConfigurationError(
            "no gateway secret: set MEETINGTASKS_GATEWAY_SECRET (e.g. to the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or run `meetingtasks gateway "
            f"--generate-secret` to create one in {settings.data_dir / GATEWAY_SECRET_FILE}"
        )
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigurationError(
            f"MEETINGTASKS_GATEWAY_SECRET is too short: use at least {MIN_SECRET_CHARS} characters"
        )
    # Settings refuse a placeholder given in the environment; this covers one written into the data directory.
    refuse_placeholder("MEETINGTASKS_GATEWAY_SECRET", secret)
    return secret

"""Who may use the console: HTTP basic auth (like Flower), and CSRF tokens on every action.

Credentials come from ``MEETINGTASKS_CONSOLE_BASIC_AUTH`` (``user:password``), else from the ``console.auth``
file that ``meetingtasks up`` writes in its data directory. Without either the console refuses to start, unless
``MEETINGTASKS_CONSOLE_ALLOW_NO_AUTH`` is set (then every request is the user ``anonymous``).

Every request but ``/healthz`` needs the credentials, static files included. Actions are POSTs carrying a token
derived from the user and a key made when the process starts (an HMAC): a page of another site cannot forge one,
and a console restart invalidates the forms open in browsers, which is harmless (reload the page).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from meetingtasks.core.errors import ConfigurationError
from meetingtasks.core.settings import CONSOLE_AUTH_FILE, Settings

#: The name every action form gives its token.
CSRF_FIELD = "csrf_token"
#: Paths open without credentials: a liveness probe that shows nothing.
OPEN_PATHS = frozenset({"/healthz"})
ANONYMOUS = "anonymous"


def console_credentials(settings: Settings) -> tuple[str, str] | None:
    """``(user, password)`` from the setting or the data directory's file; ``None`` only when running without
    auth is allowed. Raises :class:`ConfigurationError` otherwise (and for a value that is not user:password)."""
    source, text = "MEETINGTASKS_CONSOLE_BASIC_AUTH", ""
    if settings.console_basic_auth is not None:
        text = settings.console_basic_auth.get_secret_value().strip()
    if not text:
        path = settings.data_dir / CONSOLE_AUTH_FILE
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
    if not text:
        if settings.console_allow_no_auth:
            return None
        raise ConfigurationError(
            "console: no basic auth configured: set MEETINGTASKS_CONSOLE_BASIC_AUTH=user:password (or run "
            f"`meetingtasks up`, which writes {CONSOLE_AUTH_FILE} in the data directory), or set "
            "MEETINGTASKS_CONSOLE_ALLOW_NO_AUTH=true to run it open on a trusted interface")
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigurationError(f"console: the basic auth in {source} is not user:password")
    return user, password


@dataclass
class Guard:
    """The console's credentials (``None``: open) and its CSRF key."""

    credentials: tuple[str, str] | None
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def user_of(self, header: str | None) -> str | None:
        """The authenticated user of an ``Authorization`` header, or ``None`` when it does not authenticate."""
        if self.credentials is None:
            return ANONYMOUS
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected_user, expected_password = self.credentials
        # Both compared in full, whatever the first says: no timing hint of which one was wrong.
        ok_user = hmac.compare_digest(user.encode(), expected_user.encode())
        ok_password = hmac.compare_digest(password.encode(), expected_password.encode())
        return user if sep and ok_user and ok_password else None

    def csrf_token(self, user: str) -> str:
        return hmac.new(self.key, user.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, user: str, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.csrf_token(user).encode())


class BasicAuthMiddleware:
    """Refuses (401 with a basic-auth challenge) every HTTP request without the console's credentials; puts
    the user in ``scope["user_name"]``."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        user = self.guard.user_of(HTTPConnection(scope).headers.get("authorization"))
        if user is None:
            refused: Response = PlainTextResponse(
                "authentication required", status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="meetingtasks console", charset="UTF-8"'})
            await refused(scope, receive, send)
            return
        scope["user_name"] = user
        await self.app(scope, receive, send)

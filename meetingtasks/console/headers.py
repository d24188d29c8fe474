"""Security headers on every console response: the pages carry buttons that replay, purge and cancel.

The CSRF token stops a forged POST, but not a page of another site showing the console in an invisible frame
(the browser sends the cached basic-auth credentials) and leading the operator's clicks onto "Purge" and
"Yes, purge". So no page may be framed (``X-Frame-Options`` for older browsers, ``frame-ancestors`` for the
rest), and the pages load nothing but the console's own files: they have no inline script or style (the one
form that submits on change does it from ``console.js``), so the policy needs no ``unsafe-inline``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Added to every HTTP response, the 401 of the auth middleware and static files included.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                given = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((name, value) for name, value in SECURITY_HEADERS if name not in given)]
            await send(message)

        await self.app(scope, receive, send_with_headers)

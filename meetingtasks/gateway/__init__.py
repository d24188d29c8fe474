"""The WebSocket gateway: clients submit tasks, follow their status live, and cancel them.

``meetingtasks gateway`` serves :func:`create_gateway_app` with uvicorn; ``meetingtasks token CLIENT_ID``
mints a token. The protocol is in :mod:`meetingtasks.gateway.protocol`, the session manager in
:mod:`meetingtasks.gateway.sessions`.
"""

from meetingtasks.gateway.app import Gateway, create_gateway_app
from meetingtasks.gateway.limits import GatewayCounters
from meetingtasks.gateway.sessions import ClientTaskManager
from meetingtasks.gateway.tokens import TokenError, mint_token, require_secret, verify_token

__all__ = [
    "ClientTaskManager",
    "Gateway",
    "GatewayCounters",
    "TokenError",
    "create_gateway_app",
    "mint_token",
    "require_secret",
    "verify_token",
]

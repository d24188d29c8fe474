"""The gateway's ASGI app (Starlette): ``/ws`` for clients, ``/`` a small page, ``/healthz``, ``/types``,
``/stats``.

A connection to ``/ws`` must carry a valid token (``?token=`` or ``Authorization: Bearer``); without one it
is refused before the WebSocket is accepted (the client sees HTTP 403). A client already holding
``gateway_max_connections_per_client`` connections has the new one accepted and closed at once (1008, with
the reason), so it can tell why. Every frame then goes to the
:class:`~meetingtasks.gateway.sessions.ClientTaskManager`; status pushes come from the status feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from meetingtasks.gateway import page
from meetingtasks.gateway.feed import StatusFeed
from meetingtasks.gateway.sessions import ClientTaskManager, TooManyConnections
from meetingtasks.gateway.tokens import TokenError, verify_token
from meetingtasks.store.platform import Platform

log = logging.getLogger(__name__)

#: How often idle sessions are closed and the counters written to Redis (``P gateway:<instance>``).
HOUSEKEEPING_S = 1.0
COUNTERS_EVERY_S = 5.0
COUNTERS_TTL_S = 30


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


class Gateway:
    """The parts of one gateway process, wired into a Starlette app by :meth:`app`."""

    def __init__(self, platform: Platform, secret: str) -> None:
        self.platform = platform
        self.secret = secret
        self.manager = ClientTaskManager(platform)
        self.feed = StatusFeed(platform, self.manager)
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.page = page.render()

    def app(self) -> Starlette:
        routes = [
            Route("/", self.index),
            Route("/healthz", self.healthz),
            Route("/types", self.types),
            Route("/stats", self.stats),
            WebSocketRoute("/ws", self.websocket),
        ]
        app = Starlette(routes=routes, lifespan=self.lifespan)
        app.state.gateway = self
        return app

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
        # which would otherwise walk it and pause every push (a tail-latency matter with 10,000 sessions).
        gc.collect()
        gc.freeze()
        await self.feed.start()
        if not await self.feed.wait_ready(10):
            log.warning("gateway: the status feed is not connected yet; pushes start once Redis answers")
        housekeeping = asyncio.get_running_loop().create_task(self._housekeeping(), name="gateway-housekeeping")
        try:
            yield
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await self.manager.submits.stop()
            await self.feed.stop()

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        next_counters = loop.time()
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            self.manager.expire_idle()
            if loop.time() >= next_counters:
                next_counters = loop.time() + COUNTERS_EVERY_S
                try:
                    await asyncio.to_thread(self._write_counters)
                except (redis.RedisError, OSError) as exc:
                    log.debug("gateway counters not written: %s", exc)

    def _write_counters(self) -> None:
        key = self.platform.keys.gateway(self.instance)
        with self.platform.redis().pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=self.manager.counters.snapshot())  # type: ignore[arg-type]
            pipe.expire(key, COUNTERS_TTL_S)
            pipe.zadd(self.platform.keys.gateways, {self.instance: time.time()})  # found by the exporter
            pipe.execute()

    # --- HTTP ---------------------------------------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        return HTMLResponse(self.page)

    async def healthz(self, request: Request) -> Response:
        connected = await self.feed.is_connected()
        body = {"ok": connected, "status_feed": "connected" if connected else "down",
                "sessions": self.manager.counters.sessions_open}
        return JSONResponse(body, status_code=200 if connected else 503)

    async def types(self, request: Request) -> Response:
        specs = self.manager.access.types()  # only what a client may submit: internal types stay unnamed
        body: list[dict[str, Any]] = [
            {"type": s.name, "service": s.service, "priority": s.priority.value,
             "schema": s.payload_model.model_json_schema()}
            for s in sorted(specs, key=lambda s: (s.service, s.name))
        ]
        return JSONResponse(body)

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.manager.counters.snapshot())

    # --- WebSocket ----------------------------------------------------------------------------------------
    async def websocket(self, ws: WebSocket) -> None:
        token = ws.query_params.get("token") or bearer(ws.headers.get("authorization"))
        try:
            client_id = verify_token(self.secret, token)
        except TokenError as exc:
            self.manager.counters.auth_refused_total += 1
            peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
            log.info("gateway: refused a connection from %s: %s", peer, exc)
            await ws.close(code=1008, reason=str(exc)[:120])
            return

        async def close(code: int, reason: str) -> None:
            with contextlib.suppress(Exception):
                await ws.close(code=code, reason=reason)

        try:
            # Counted before the accept's await: two connections racing for the last slot cannot both get it.
            session = self.manager.open(client_id, ws.send_text, close)
        except TooManyConnections as exc:
            log.info("gateway: refused a connection of client %s: %s", client_id, exc)
            await ws.accept()
            await close(1008, str(exc)[:120])
            return
        try:
            await ws.accept()
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self.manager.receive(session, message.get("text"))
        finally:
            self.manager.close(session)


def create_gateway_app(platform: Platform, secret: str) -> Starlette:
    """The gateway's ASGI app for ``platform``, verifying tokens with ``secret``."""
    return Gateway(platform, secret).app()

"""The browser side of the telephony process: the softphone, the live call view, their feeds.

    GET /                   softphone page (speaks Twilio Media Streams to /twilio/media)
    GET /static/{file}      its JavaScript, AudioWorklet, CSS (aiohttp's static route on web/static)
    GET /calls              live call view page
    GET /calls.json         live calls (registry) + recent ended calls (records DB, read in a thread)
    GET /calls/{id}/recording.wav   a recorded call (two channels: caller left, agent right)
    GET /softphone/events   WebSocket of call events as JSON: ?callSid=CA... for one call, none for all

Access (`softphone_allowed`): these views bypass Twilio's signature, so they are for local
development unless the operator opts in. A loopback client (no proxy headers, a loopback Host)
is allowed while `server.softphone` is true; any other client must present the shared token
held in the env var named by `server.softphone_token_env` (query `?token=`, header
`X-Softphone-Token`, or the cookie the page sets), and a cross-origin browser request is always
refused (no other site can drive the softphone or read transcripts through the visitor's browser).
One middleware (`softphone_guard`) applies the rule to these routes and to no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Set
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler, Middleware

from voicecall.config import Config
from voicecall.web.call_feed import CallFeed, CallRegistry, Subscriber
from voicecall.web.call_history import ended_calls, recording_path

log = logging.getLogger("voicecall.web.views")

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_COOKIE = "voicecall_softphone"
#: Most ended calls one /calls.json may ask for.
MAX_ENDED_CALLS = 100
_LOOPBACK_NAMES = frozenset(("localhost", "127.0.0.1", "::1", "[::1]"))
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")

FEED_KEY = web.AppKey("voicecall_call_feed", CallFeed)
SOCKETS_KEY = web.AppKey("voicecall_view_sockets", set)


# ---------------------------------------------------------------- access control


def _presented_token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else ""
    return (request.query.get("token") or request.headers.get("X-Softphone-Token") or bearer
            or request.cookies.get(TOKEN_COOKIE, ""))


def _is_loopback_client(request: web.Request) -> bool:
    """The peer is this machine, not relayed by a proxy, and addressed by a loopback name.

    Proxy headers disqualify: behind a local reverse proxy every visitor has a loopback address.
    The Host check stops DNS rebinding (a web page whose name resolves to 127.0.0.1).
    """
    try:
        if request.remote is None or not ipaddress.ip_address(request.remote).is_loopback:
            return False
    except ValueError:
        return False
    if any(h in request.headers for h in _PROXY_HEADERS):
        return False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return host.lower() in _LOOPBACK_NAMES or _is_loopback_ip(host)


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _same_origin(request: web.Request) -> bool:
    """No Origin (Twilio, curl, same-origin GETs) or an Origin naming this very host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()


def softphone_allowed(request: web.Request, cfg: Config) -> bool:
    """May this request use the softphone views (and an unsigned /twilio/media upgrade)?"""
    if not cfg.server.softphone or not _same_origin(request):
        return False
    if _is_loopback_client(request):
        return True
    expected = os.environ.get(cfg.server.softphone_token_env, "")
    presented = _presented_token(request)
    return bool(expected) and bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())


def _guard(request: web.Request, cfg: Config) -> None:
    if not cfg.server.softphone:
        raise web.HTTPNotFound(text="the softphone is disabled (server.softphone = false)\n")
    if not softphone_allowed(request, cfg):
        log.warning("softphone view refused for %s (%s)", request.remote, request.path)
        raise web.HTTPForbidden(text=(
            "the softphone is for loopback clients; to allow others set the shared token in "
            f"${cfg.server.softphone_token_env} and open /?token=<token>\n"))


def softphone_guard(cfg: Config, guarded: Set[web.AbstractResource]) -> Middleware:
    """Middleware: the access rule for the `guarded` resources; files they serve are not cached.

    Every other route (the Twilio webhooks, /healthz) passes straight through.
    """
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.resource not in guarded:
            return await handler(request)
        _guard(request, cfg)
        response = await handler(request)
        if isinstance(response, web.FileResponse):  # pages and scripts change with every deploy
            response.headers["Cache-Control"] = "no-cache"
        return response

    return guard


# ---------------------------------------------------------------- routes


def add_views(app: web.Application, conversations: CallRegistry, cfg: Config) -> None:
    """Register the softphone and call-view routes on the telephony app."""
    feed = CallFeed(conversations)
    app[FEED_KEY] = feed
    app[SOCKETS_KEY] = set()

    def page(name: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            resp = web.FileResponse(STATIC_DIR / name)
            token = request.query.get("token")
            if token and not _is_loopback_client(request):  # remember it for scripts and sockets
                resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", secure=request.secure)
            return resp

        return handler

    async def calls_json(request: web.Request) -> web.Response:
        try:
            limit = min(max(int(request.query.get("limit", "20")), 1), MAX_ENDED_CALLS)
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be an integer\n") from None
        history = await asyncio.to_thread(ended_calls, cfg.records, limit)
        return web.json_response({"live": conversations.snapshot(), "ended": history["calls"],
                                  "records_error": history["error"]})

    async def recording(request: web.Request) -> web.StreamResponse:
        try:
            call_id = int(request.match_info["id"])
        except ValueError:
            raise web.HTTPNotFound(text="no such call\n") from None
        path = await asyncio.to_thread(recording_path, cfg.records, call_id)
        if path is None:
            raise web.HTTPNotFound(text=f"call {call_id} has no recording\n")
        return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "no-cache"})

    async def events(request: web.Request) -> web.StreamResponse:
        call_sid = request.query.get("callSid") or None
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        sub = feed.subscribe(call_sid)
        sockets: set[web.WebSocketResponse] = request.app[SOCKETS_KEY]
        sockets.add(ws)
        pump = asyncio.get_running_loop().create_task(_pump(ws, sub, feed.snapshot_event(call_sid)))
        try:
            async for _ in ws:  # the browser sends nothing we need; this notices it leaving
                pass
        finally:
            feed.unsubscribe(sub)
            sockets.discard(ws)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, TimeoutError):
                await asyncio.wait_for(pump, 1.0)
        return ws

    async def close_sockets(app: web.Application) -> None:
        """On shutdown: close the event sockets now instead of waiting out their timeouts."""
        for ws in list(app[SOCKETS_KEY]):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    async def detach(app: web.Application) -> None:
        app[FEED_KEY].detach()

    feed.attach()
    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(detach)
    routes = (app.router.add_get("/", page("index.html")),
              app.router.add_get("/calls", page("calls.html")),
              app.router.add_get("/calls.json", calls_json),
              app.router.add_get("/calls/{id}/recording.wav", recording),
              app.router.add_get("/softphone/events", events))
    static = app.router.add_static("/static", STATIC_DIR)  # its own checks: no path traversal, no index
    app.middlewares.append(softphone_guard(cfg, {static, *(r.resource for r in routes)}))


async def _pump(ws: web.WebSocketResponse, sub: Subscriber, first: dict[str, Any]) -> None:
    """Owned by its socket's handler: send the snapshot, then every event as it comes."""
    await ws.send_json(first)
    while not ws.closed:
        await ws.send_json(await sub.queue.get())

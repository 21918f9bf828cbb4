"""The telephony process's aiohttp app: Twilio webhooks, the Media Streams WebSocket, /healthz.

    POST /twilio/voice   (signed)  -> TwiML <Connect><Stream url="wss://HOST/twilio/media"> + <Parameter>s;
                                      when full, not ready or draining: <Redirect> to a peer with room
                                      (server.peers, telephony/peers.py), else <Say>busy</Say><Hangup/>
    GET  /twilio/media   (signed upgrade) -> MediaStream + handler_factory() until stop/close
    POST /twilio/status  (signed)  -> call / stream status callbacks, logged (and to STATUS_LISTENER)
    GET  /healthz                  -> readiness() as JSON, 200 when ready else 503

Process-level seams: `handler_factory` makes each call's conversation; `readiness` says whether
the workers can serve (the supervisor's view); `set_draining` and
`end_all_calls` let a draining process refuse new calls and end the live ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web
from twilio.twiml.voice_response import VoiceResponse

from voicecall.config import Config
from voicecall.telephony.peers import REDIRECTED_PARAM, PeerRouter, peer_router_ctx
from voicecall.twilio.handler import CallHandlerFactory, NullHandler
from voicecall.twilio.media_stream import MediaStream
from voicecall.twilio.security import SIGNATURE_HEADER, Signatures

log = logging.getLogger("voicecall.telephony")

VOICE_PATH = "/twilio/voice"
MEDIA_PATH = "/twilio/media"
STATUS_PATH = "/twilio/status"
HEALTH_PATH = "/healthz"
#: A webhook holds a call slot this long while Twilio opens the WebSocket.
RESERVATION_NS = 15_000_000_000
#: Twilio's limit on one `<Parameter>`'s name + value (Twilio's `<Stream>` `<Parameter>` documentation).
PARAMETER_MAX_CHARS = 500
#: Webhook fields handed to the call through `start.customParameters`.
FORWARDED_FIELDS = ("CallSid", "From", "To", "Direction")

#: Returns at least {"ready": bool}; the rest goes into /healthz as is.
Readiness = Callable[[], Mapping[str, Any]]


def always_ready() -> Mapping[str, Any]:
    return {"ready": True}


class Calls:
    """Live streams and webhook reservations: the one place that counts calls."""

    def __init__(self, max_calls: int) -> None:
        self.max_calls = max_calls
        self.streams: set[MediaStream] = set()
        self._reserved: dict[str, int] = {}  # CallSid -> monotonic ns deadline
        self.draining = False
        self.accepted = 0
        self.refused = 0

    def live(self) -> int:
        """Streams open now plus calls answered by the webhook whose stream has not started yet."""
        now = time.monotonic_ns()
        started = {s.call_sid for s in self.streams}
        self._reserved = {sid: t for sid, t in self._reserved.items() if t > now and sid not in started}
        return len(self.streams) + len(self._reserved)

    def reserve(self, call_sid: str) -> None:
        self._reserved[call_sid or f"anonymous-{self.accepted}"] = time.monotonic_ns() + RESERVATION_NS

    async def close_all(self, reason: str) -> None:
        streams = list(self.streams)
        if streams:
            log.info("closing %d live stream(s): %s", len(streams), reason)
            await asyncio.gather(*(s.hang_up(reason) for s in streams), return_exceptions=True)


CONFIG = web.AppKey("voicecall_config", Config)
SIGNATURES = web.AppKey("voicecall_signatures", Signatures)
READINESS = web.AppKey("voicecall_readiness", Callable[[], Mapping[str, Any]])  # type: ignore[arg-type]
HANDLER_FACTORY = web.AppKey("voicecall_handler_factory", Callable[[], Any])  # type: ignore[arg-type]
CALLS = web.AppKey("voicecall_calls", Calls)
PEERS = web.AppKey("voicecall_peers", PeerRouter)
#: Optional: more <Parameter>s for a call's stream, from the webhook's form fields (the agent).
WEBHOOK_PARAMETERS = web.AppKey("voicecall_webhook_parameters", Callable[[Mapping[str, str]], Mapping[str, str]])  # type: ignore[arg-type]
#: Optional: told every signature-checked status callback (records keep them).
STATUS_LISTENER = web.AppKey("voicecall_status_listener", Callable[[Mapping[str, str]], None])  # type: ignore[arg-type]


def create_app(config: Config, handler_factory: CallHandlerFactory = NullHandler,
               readiness: Readiness = always_ready) -> web.Application:
    """The telephony app; `handler_factory()` is called once per Media Stream WebSocket."""
    app = web.Application(client_max_size=64 * 1024)
    app[CONFIG] = config
    app[READINESS] = readiness
    app[HANDLER_FACTORY] = handler_factory
    app.cleanup_ctx.append(_signatures_ctx)
    app.cleanup_ctx.append(_calls_ctx)
    app[PEERS] = PeerRouter(config.server.peers, config.server.peer_timeout_s)
    app.cleanup_ctx.append(lambda app: peer_router_ctx(app[PEERS]))
    app.on_shutdown.append(_close_streams)
    app.router.add_post(VOICE_PATH, voice_webhook)
    app.router.add_get(MEDIA_PATH, media_stream)
    app.router.add_post(STATUS_PATH, status_callback)
    app.router.add_get(HEALTH_PATH, healthz)
    return app


async def _signatures_ctx(app: web.Application) -> AsyncIterator[None]:
    # Read the token at start-up, not import: the supervisor sets the environment first.
    app[SIGNATURES] = Signatures(app[CONFIG].server)
    if not app[SIGNATURES].enabled:
        log.warning("$%s is not set: Twilio signatures are NOT checked", app[CONFIG].server.auth_token_env)
    yield


async def _calls_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CALLS] = Calls(app[CONFIG].server.max_calls)
    yield
    await app[CALLS].close_all("server stopped")


async def _close_streams(app: web.Application) -> None:
    # on_shutdown, before the runner waits for handlers: an open WebSocket would hold it 60 s.
    if CALLS in app:
        await app[CALLS].close_all("server shutting down")


# ---------------------------------------------------------------- process-level seams


def set_draining(app: web.Application, draining: bool = True) -> None:
    """Refuse new calls politely (live ones go on); /healthz reports it."""
    app[CALLS].draining = draining


async def end_all_calls(app: web.Application, reason: str) -> None:
    if CALLS in app:
        await app[CALLS].close_all(reason)


def _ready(app: web.Application) -> tuple[bool, dict[str, Any]]:
    try:
        body = dict(app[READINESS]())
    except Exception:  # a broken readiness probe means "not ready", not a 500
        log.exception("readiness callable failed")
        body = {"ready": False, "error": "readiness check failed"}
    calls = app[CALLS]
    body["draining"] = bool(body.get("draining")) or calls.draining
    body["live_calls"] = calls.live()
    body["max_calls"] = calls.max_calls
    body["instance"] = app[CONFIG].server.instance()
    ready = bool(body.get("ready")) and not body["draining"]
    body["ready"] = ready
    return ready, body


# ---------------------------------------------------------------- routes


async def voice_webhook(request: web.Request) -> web.Response:
    """Twilio asks what to do with a call: stream it to us, or say we are busy and hang up."""
    app = request.app
    params = await app[SIGNATURES].check_webhook(request)
    call_sid = params.get("CallSid", "")
    calls = app[CALLS]
    ready, _ = _ready(app)
    if not ready or calls.live() >= calls.max_calls:
        calls.refused += 1
        why = "not ready" if not ready else f"{calls.max_calls} calls live (server.max_calls)"
        peer = None if request.query.get(REDIRECTED_PARAM) else await app[PEERS].find_room()
        response = VoiceResponse()
        if peer is not None:
            app[PEERS].redirected += 1
            log.warning("call %s from %s: %s; redirected to peer %s", call_sid, params.get("From", "?"), why, peer)
            response.redirect(f"{peer}{VOICE_PATH}?{REDIRECTED_PARAM}=1", method="POST")
            return _twiml(response)
        log.warning("call %s from %s refused: %s", call_sid, params.get("From", "?"), why)
        response.say(app[CONFIG].call.busy_message)
        response.hangup()
        return _twiml(response)
    calls.accepted += 1
    calls.reserve(call_sid)
    signatures = app[SIGNATURES]
    base = signatures.public_http_url(request).removesuffix(request.path_qs)
    response = VoiceResponse()
    connect = response.connect()
    stream = connect.stream(url=signatures.stream_url(request, MEDIA_PATH),
                            status_callback=base + STATUS_PATH, status_callback_method="POST")
    extra = app[WEBHOOK_PARAMETERS](params) if WEBHOOK_PARAMETERS in app else {}
    for name, value in [*((n, params.get(n, "")) for n in FORWARDED_FIELDS), *extra.items()]:
        if value:
            stream.parameter(name=name, value=value[: PARAMETER_MAX_CHARS - len(name) - 1])
    log.info("call %s from %s: streaming to %s", call_sid, params.get("From", "?"), MEDIA_PATH)
    return _twiml(response)


def _twiml(response: VoiceResponse) -> web.Response:
    return web.Response(text=str(response), content_type="text/xml")


async def media_stream(request: web.Request) -> web.StreamResponse:
    """One call's Media Stream: checked before the 101, then served until it ends."""
    app = request.app
    if SIGNATURE_HEADER in request.headers or not _softphone_upgrade(request):
        app[SIGNATURES].check_upgrade(request, MEDIA_PATH)
    cfg = app[CONFIG].server
    calls = app[CALLS]
    if len(calls.streams) >= calls.max_calls:
        log.warning("media stream from %s refused: %d streams live (server.max_calls)", request.remote, len(calls.streams))
        raise web.HTTPServiceUnavailable(text="too many calls\n")
    # compress=False: base64 mu-law barely compresses and deflate would cost CPU on every frame.
    ws = web.WebSocketResponse(max_msg_size=cfg.max_ws_message_bytes, compress=False, timeout=2.0)
    await ws.prepare(request)
    stream = MediaStream(ws, app[HANDLER_FACTORY](), playout_lead_ms=cfg.playout_lead_ms,
                         idle_timeout_s=cfg.idle_timeout_s, label=f"ws {request.remote}")
    calls.streams.add(stream)
    try:
        await stream.serve()
    finally:
        calls.streams.discard(stream)
    return ws


def _softphone_upgrade(request: web.Request) -> bool:
    """An unsigned upgrade from the browser softphone: allowed for loopback (or token) clients,
    which `softphone_allowed` checks; anything else must carry Twilio's signature."""
    from voicecall.web.views import softphone_allowed  # views import app-level seams lazily

    return softphone_allowed(request, request.app[CONFIG])


async def status_callback(request: web.Request) -> web.Response:
    """Call and stream status callbacks: logged (stream errors loudly)."""
    params = await request.app[SIGNATURES].check_webhook(request)
    if params.get("StreamError"):
        log.warning("stream %s of call %s: %s: %s", params.get("StreamSid", "?"), params.get("CallSid", "?"),
                    params.get("StreamEvent", "?"), params["StreamError"])
    else:
        log.info("status of call %s: %s", params.get("CallSid", "?"),
                 params.get("CallStatus") or params.get("StreamEvent") or "?")
    if STATUS_LISTENER in request.app:
        request.app[STATUS_LISTENER](params)
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    ready, body = _ready(request.app)
    return web.json_response(body, status=200 if ready else 503)


__all__ = [
    "CALLS", "CONFIG", "HANDLER_FACTORY", "READINESS", "SIGNATURES", "STATUS_LISTENER", "WEBHOOK_PARAMETERS",
    "Calls", "Readiness",
    "create_app", "end_all_calls", "set_draining",
]

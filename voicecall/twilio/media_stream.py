"""One Twilio Media Stream: the inbound side decoded for a handler, the outbound side paced.

    inbound  ws text -> InboundDecoder -> checks (start seen, streamSid, base64) -> handler
    outbound play()/mark()/clear() -> `OutboundPlayout` (voicecall/twilio/playout.py: pacing,
             marks resolved to played/dropped) -> ws `media` / `mark` / `clear`

`MediaStream` owns the socket: the inbound side, the idle timeout and teardown.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from ipc.audio import FRAME_BYTES, FRAME_MS
from voicecall.twilio.playout import MarkHandle, MarkState, OutboundPlayout, StreamStats
from voicecall.twilio.protocol import (
    BadMessage,
    Connected,
    Dtmf,
    InboundDecoder,
    Mark,
    Media,
    Start,
    Stop,
    UnknownEvent,
)

if TYPE_CHECKING:
    from voicecall.twilio.handler import CallHandler

log = logging.getLogger("voicecall.telephony")

DTMF_DIGITS = frozenset("0123456789*#ABCD")
_DECODER = InboundDecoder()
_U32 = 2**32 - 1  # media time travels to the stt worker as u32 (ipc/ring.py record header)
_LOGGED_ERRORS = 5  # per stream, then every 100th: a peer spamming junk must not flood the log


class MediaStream(OutboundPlayout):
    """One call's WebSocket to Twilio. Created by the route, driven by `serve()`."""

    def __init__(self, ws: web.WebSocketResponse, handler: CallHandler, *, playout_lead_ms: int = 200,
                 idle_timeout_s: float = 30.0, label: str = "") -> None:
        self.ws = ws
        self.handler = handler
        self.label = label or f"ws-{id(self):x}"
        self.stream_sid = ""
        self.call_sid = ""
        self.start: Start | None = None
        self.connected = False
        self.closed = False
        self.close_reason = ""
        self.stats = StreamStats()
        self._init_playout(playout_lead_ms)
        self.last_media_ms = -1
        self._idle_ns = int(idle_timeout_s * 1e9)
        self._writer: asyncio.Task[None] | None = None
        self._last_rx_ns = time.monotonic_ns()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._close_task: asyncio.Task[bool] | None = None  # an idle close, awaited in teardown

    # ------------------------------------------------------------------ ending the call

    async def hang_up(self, reason: str) -> None:
        """End the stream from our side (closing the socket ends `<Connect>`, so the call)."""
        self.close_reason = self.close_reason or reason
        if not self.ws.closed:
            await self.ws.close(code=WSCloseCode.OK, message=reason[:100].encode())

    # ------------------------------------------------------------------ inbound

    async def serve(self) -> str:
        """Read the socket until `stop`, close or idle timeout; then tear down. Returns the reason."""
        loop = asyncio.get_running_loop()
        self._arm_idle(loop)
        reason = "peer closed without stop"
        try:
            async for msg in self.ws:
                if msg.type is WSMsgType.TEXT:
                    if self.feed(msg.data, time.monotonic_ns()):
                        reason = "stop"
                        break
                elif msg.type is WSMsgType.BINARY:
                    self._protocol_error("binary frame (Twilio sends JSON text frames)")
                elif msg.type is WSMsgType.ERROR:
                    reason = f"socket error: {self.ws.exception()!r}"
                    break
            if self.close_reason:
                reason = self.close_reason
        finally:
            await self._teardown(reason)
        return reason

    def feed(self, data: str | bytes, arrival_ns: int) -> bool:
        """Handle one inbound frame; True when it was `stop`."""
        self._last_rx_ns = arrival_ns
        msg = _DECODER.decode(data)
        if type(msg) is Media:  # the hot path: ~50 a second per call
            self._on_media(msg, arrival_ns)
        elif isinstance(msg, Mark):
            if self._check_sid(msg.stream_sid, "mark"):
                self._on_echo(msg.mark.name, arrival_ns)
        elif isinstance(msg, Start):
            self._on_start(msg)
        elif isinstance(msg, Dtmf):
            if self._check_sid(msg.stream_sid, "dtmf"):
                digit = msg.dtmf.digit
                if digit in DTMF_DIGITS:
                    try:
                        self.handler.on_dtmf(digit)
                    except Exception:
                        self._handler_failed("on_dtmf")
                else:
                    self._protocol_error(f"dtmf digit {digit!r} is not a keypad key")
        elif isinstance(msg, Stop):
            if self._check_sid(msg.stream_sid, "stop"):
                return True
        elif isinstance(msg, Connected):
            if self.connected or self.started:
                self._protocol_error("second `connected` ignored")
            self.connected = True
        elif isinstance(msg, UnknownEvent):
            self.stats.unknown_events += 1
            if self.stats.unknown_events <= _LOGGED_ERRORS:
                log.info("%s: ignoring unknown event %r", self.label, msg.event)
        elif isinstance(msg, BadMessage):
            self._protocol_error(msg.error)
        return False

    def _on_media(self, msg: Media, arrival_ns: int) -> None:
        if not self.started:
            self._protocol_error("media before start dropped")
            return
        if msg.stream_sid != self.stream_sid:
            self._protocol_error(f"media for streamSid {msg.stream_sid!r} dropped (this stream is {self.stream_sid})")
            return
        media = msg.media
        if media.track != "inbound":
            return  # bidirectional streams carry the caller only; anything else is not ours to hear
        try:
            frame = base64.b64decode(media.payload, validate=True)
        except (binascii.Error, ValueError):
            self._protocol_error(f"media chunk {media.chunk}: payload is not base64")
            return
        if not frame:
            self._protocol_error(f"media chunk {media.chunk}: empty payload")
            return
        if len(frame) != FRAME_BYTES:
            # Twilio does not document a frame size (20 ms is observed): accept any length.
            self.stats.odd_frames_in += 1
        media_ms = media.timestamp if media.timestamp >= 0 else self.last_media_ms + FRAME_MS
        if media_ms > _U32:  # the decoder bounds a timestamp; one omitted after 2**32 - 1 would still overflow
            self._protocol_error(f"media chunk {media.chunk}: media time {media_ms} ms out of range")
            return
        self.last_media_ms = media_ms
        self.stats.frames_in += 1
        if self.recorder is not None:
            self.recorder.caller(frame, media_ms)
        try:
            self.handler.on_media(frame, media.chunk, media_ms, arrival_ns)
        except Exception:
            self._handler_failed("on_media")

    def _on_start(self, msg: Start) -> None:
        if self.started:
            self._protocol_error(f"second start (streamSid {msg.start.stream_sid}) ignored")
            return
        sid = msg.start.stream_sid or msg.stream_sid
        if not sid:
            self._protocol_error("start without a streamSid ignored")
            return
        fmt = msg.start.media_format
        if fmt.encoding != "audio/x-mulaw" or fmt.sample_rate != 8000 or fmt.channels != 1:
            log.warning("%s: media format %s/%d/%d is not mulaw/8000/1; treating it as mulaw",
                        self.label, fmt.encoding, fmt.sample_rate, fmt.channels)
        self.start = msg
        self.stream_sid = sid
        self.call_sid = msg.start.call_sid
        self.label = f"call {self.call_sid or sid}"
        self._writer = asyncio.get_running_loop().create_task(self._playout(), name=f"playout-{sid}")
        log.info("%s: stream %s started", self.label, sid)
        try:
            self.handler.on_start(self, msg)
        except Exception:
            self._handler_failed("on_start")

    def _check_sid(self, sid: str, what: str) -> bool:
        if not self.started:
            self._protocol_error(f"{what} before start dropped")
            return False
        if sid != self.stream_sid:
            self._protocol_error(f"{what} for streamSid {sid!r} dropped (this stream is {self.stream_sid})")
            return False
        return True


    # ------------------------------------------------------------------ playout


    # ------------------------------------------------------------------ teardown and errors

    def _arm_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        # One timer re-armed per idle period, not one per message: cheap on the hot path.
        self._idle_timer = loop.call_later(self._idle_ns / 1e9, self._check_idle, loop)

    def _check_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        silent_ns = time.monotonic_ns() - self._last_rx_ns
        if silent_ns < self._idle_ns:
            self._idle_timer = loop.call_later((self._idle_ns - silent_ns) / 1e9, self._check_idle, loop)
            return
        self._idle_timer = None
        log.warning("%s: no message for %.0f s (server.idle_timeout_s); closing", self.label, silent_ns / 1e9)
        self.close_reason = "idle timeout"
        self._close_task = loop.create_task(self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"idle timeout"))

    async def _teardown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._close_task is not None:
            await asyncio.wait({self._close_task}, timeout=2.0)
        if self._writer is not None:
            self._writer.cancel()
            try:
                await asyncio.wait_for(self._writer, 2.0)
            except (asyncio.CancelledError, TimeoutError):
                pass
            except Exception as exc:  # a send that failed because the peer vanished
                log.debug("%s: playout ended with %r", self.label, exc)
        now = time.monotonic_ns()
        pending = [e for e in self._queue if isinstance(e, MarkHandle)] + list(self._in_flight)
        self._queue.clear()
        self._in_flight.clear()
        for handle in pending:
            self._settle(handle, MarkState.DROPPED, now)
        if self.recorder is not None:
            self.recorder.close(now)
        if not self.ws.closed:
            try:
                await self.ws.close(code=WSCloseCode.OK if reason == "stop" else WSCloseCode.GOING_AWAY)
            except Exception as exc:  # the transport may already be gone
                log.debug("%s: close failed: %r", self.label, exc)
        log.info("%s: stream closed (%s): %d frames in, %d out, %d marks played, %d dropped, %d protocol errors",
                 self.label, reason, self.stats.frames_in, self.stats.frames_out, self.stats.marks_played,
                 self.stats.marks_dropped, self.stats.protocol_errors)
        try:
            await asyncio.wait_for(self.handler.on_close(reason), 5.0)
        except Exception:
            self._handler_failed("on_close")

    def _handler_failed(self, method: str) -> None:
        self.stats.handler_errors += 1
        if self.stats.handler_errors <= _LOGGED_ERRORS or self.stats.handler_errors % 100 == 0:
            log.exception("%s: handler.%s failed (%d so far); the call goes on", self.label, method,
                          self.stats.handler_errors)

    def _protocol_error(self, what: str) -> None:
        self.stats.protocol_errors += 1
        self.stats.errors.append(what)
        n = self.stats.protocol_errors
        if n <= _LOGGED_ERRORS or n % 100 == 0:
            log.warning("%s: protocol error #%d: %s", self.label, n, what)

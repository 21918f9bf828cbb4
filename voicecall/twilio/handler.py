"""The seam between the Media Streams edge and whatever talks to the caller.

    create_app(cfg, handler_factory=...)        one factory per process
        GET /twilio/media  -> MediaStream       one per WebSocket
                           -> factory()         one CallHandler per WebSocket
    Twilio `start`         -> handler.on_start(stream, start)     (once; stream can now send)
    Twilio `media`         -> handler.on_media(frame, chunk, media_ms, arrival_ns)
    our mark resolved      -> handler.on_mark(mark)               (mark.played: heard or dropped)
    Twilio `dtmf`          -> handler.on_dtmf(digit)
    stream over            -> await handler.on_close(reason)      (exactly once, even without `start`)

The seam is one pair of Protocols, owned by the edge:

    CallHandler  what the edge calls on the conversation (the callbacks above)
    CallStream   what the conversation may call on the edge, given in `on_start`:
                 play(mulaw, turn_id), mark(name, turn_id) -> MarkHandle, clear(),
                 await hang_up(reason), first_sent_ns(turn_id) (when that turn's first
                 frame really left for Twilio, not when it was queued), record(recorder)
                 (both directions as the caller heard them, to a call recording)

`MediaStream` is the real `CallStream`. Callbacks run on the event loop and must not block; a
handler that needs to wait starts a task it owns and cancels in `on_close`. An exception in a
callback is logged and counted; the call goes on. (`voicecall.sim.echo.EchoHandler` is a
handler for tests and the CPU benchmark.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from voicecall.twilio.playout import MarkHandle, StreamRecorder
    from voicecall.twilio.protocol import Start


class CallStream(Protocol):
    """What a conversation may ask of its media stream (the Twilio WebSocket)."""

    def play(self, mulaw: bytes, turn_id: int | None = None) -> None: ...
    def mark(self, name: str, turn_id: int | None = None) -> MarkHandle: ...
    def clear(self) -> int: ...
    async def hang_up(self, reason: str) -> None: ...
    def first_sent_ns(self, turn_id: int) -> int | None:
        """Monotonic ns when the first frame of `turn_id` was sent (recent turns only), else None."""
        ...
    def record(self, recorder: StreamRecorder) -> None: ...
    def tap_played(self, tap: Callable[[bytes, int], None]) -> None:
        """Call `tap(frame, play_ns)` for every frame sent from now on (when it plays: an estimate)."""
        ...


class CallHandler(Protocol):
    """One call's conversation, driven by its media stream (see the module diagram)."""

    def on_start(self, stream: CallStream, start: Start) -> None: ...
    def on_media(self, frame: bytes, chunk: int, media_ms: int, arrival_ns: int) -> None: ...
    def on_mark(self, mark: MarkHandle) -> None: ...
    def on_dtmf(self, digit: str) -> None: ...
    async def on_close(self, reason: str) -> None: ...


#: Called once per accepted WebSocket; the real conversation plugs in here.
CallHandlerFactory = Callable[[], CallHandler]


class NullHandler:
    """Accepts everything and says nothing (an app built without a handler)."""

    def on_start(self, stream: CallStream, start: Start) -> None:
        pass

    def on_media(self, frame: bytes, chunk: int, media_ms: int, arrival_ns: int) -> None:
        pass

    def on_mark(self, mark: MarkHandle) -> None:
        pass

    def on_dtmf(self, digit: str) -> None:
        pass

    async def on_close(self, reason: str) -> None:
        pass

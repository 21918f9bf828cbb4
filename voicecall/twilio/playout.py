"""The outbound half of a Twilio Media Stream: audio paced to Twilio, marks tracked to played/dropped.

    play()/mark() -> queue [frame | frame | MarkHandle | frame ...] -> playout task
        -> ws `media` (exactly 160 B = 20 ms each) / `mark`, never more than
           `server.playout_lead_ms` ahead of real time;  clear() -> ws `clear` first

Why pace instead of sending everything at once: Twilio buffers whatever we send and plays it
in real time, so a long backlog is audio the caller would hear after a barge-in unless `clear`
arrives, and marks would say nothing about *now*. With a bounded lead `clear` drops little.

Marks (Twilio's `mark` message): Twilio echoes a mark when the audio before it has played, and echoes
every pending mark at once after `clear`. So an echo alone cannot say "heard": each mark
remembers the clear epoch it was sent in, and an echo of a mark from an earlier epoch means
dropped. Marks still in our own queue at `clear` never reach Twilio and are dropped at once.
(A mark whose audio finished playing just as we sent `clear` is reported dropped: the
conservative answer for "what did the caller hear".)

`OutboundPlayout` is the base of `MediaStream` (voicecall/twilio/media_stream.py), which owns
the socket, the inbound side and teardown; the state used here is declared below and set up
by `_init_playout`.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from ipc.audio import FRAME_BYTES, FRAME_MS, pad_frame
from voicecall.twilio.protocol import OutboundEncoder, Start

if TYPE_CHECKING:
    from voicecall.twilio.handler import CallHandler

FRAME_NS = FRAME_MS * 1_000_000
_ENCODER = OutboundEncoder()


class MarkState(enum.Enum):
    QUEUED = "queued"  # behind audio in our playout queue
    SENT = "sent"  # at Twilio, waiting for the audio before it to play
    PLAYED = "played"  # echoed in the epoch it was sent: the caller heard everything before it
    DROPPED = "dropped"  # cleared (by us or Twilio) or the stream ended first


@dataclass(eq=False, slots=True)
class MarkHandle:
    """A mark we placed; resolved exactly once, to PLAYED or DROPPED."""

    name: str
    turn_id: int = 0
    state: MarkState = MarkState.QUEUED
    epoch: int = 0
    queued_ns: int = 0
    sent_ns: int = 0
    done_ns: int = 0
    _waiter: asyncio.Future[bool] | None = None

    @property
    def played(self) -> bool:
        return self.state is MarkState.PLAYED

    @property
    def done(self) -> bool:
        return self.state in (MarkState.PLAYED, MarkState.DROPPED)

    async def wait(self) -> bool:
        """Until resolved; True if played (callers bound it with `asyncio.timeout`)."""
        if self.done:
            return self.played
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._waiter)

    def _resolve(self, state: MarkState, now_ns: int) -> None:
        self.state = state
        self.done_ns = now_ns
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(state is MarkState.PLAYED)


@dataclass
class StreamStats:
    """Counters a test or `/metrics` can read."""

    frames_in: int = 0
    frames_out: int = 0
    odd_frames_in: int = 0  # payloads that were not 160 bytes (accepted, counted)
    marks_played: int = 0
    marks_dropped: int = 0
    clears: int = 0
    frames_cleared: int = 0
    protocol_errors: int = 0
    unknown_events: int = 0
    handler_errors: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=16))


class StreamRecorder(Protocol):
    """Hears both directions of a call as the caller did (voicecall/recording.py is the real one)."""

    def caller(self, frame: bytes, media_ms: int) -> None: ...
    def agent(self, frame: bytes, play_ns: int) -> None:
        """A frame sent to Twilio, which starts playing it at `play_ns` (monotonic)."""
        ...
    def cleared(self, now_ns: int) -> None:
        """`clear` at `now_ns`: audio scheduled from then on was never heard."""
        ...
    def close(self, now_ns: int | None = None) -> object: ...


class _TurnBoundary(int):
    """Queue entry: the frames after it belong to this turn (for first-frame-sent stamps)."""


class OutboundPlayout:
    """Paced audio and tracked marks towards Twilio (see the module docstring)."""

    ws: web.WebSocketResponse
    handler: CallHandler
    stream_sid: str
    start: Start | None
    closed: bool
    stats: StreamStats

    def _init_playout(self, playout_lead_ms: int) -> None:
        self._first_sent: dict[int, int] = {}  # turn -> monotonic ns its first frame went out (last few)
        self._lead_ns = max(playout_lead_ms, FRAME_MS) * 1_000_000
        # Wake to refill when the lead drops by this much: a few frames per wake-up, not one.
        self._refill_ns = max(FRAME_NS, min(self._lead_ns // 2, 100_000_000))
        self._queue: deque[bytes | MarkHandle | _TurnBoundary] = deque()
        self._queued_frames = 0
        self._partial = b""
        self._turn = 0
        self._sending_turn = 0
        self._in_flight: deque[MarkHandle] = deque()  # sent, not echoed, FIFO as Twilio echoes
        self._epoch = 0
        self._clear_pending = False
        self._play_end_ns = 0  # when Twilio will have played everything we sent (our estimate)
        self._waiter: asyncio.Future[None] | None = None
        self.recorder: StreamRecorder | None = None
        self._played_tap: Callable[[bytes, int], None] | None = None

    def record(self, recorder: StreamRecorder) -> None:
        """Send both directions of the call to `recorder` from now on (closed with the stream)."""
        self.recorder = recorder

    def tap_played(self, tap: Callable[[bytes, int], None]) -> None:
        """Also hand every frame sent from now on to `tap(frame, play_ns)` (the stt worker's echo gate)."""
        self._played_tap = tap

    def _handler_failed(self, method: str) -> None:
        raise NotImplementedError

    def _protocol_error(self, what: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ outbound API (for the handler)

    @property
    def started(self) -> bool:
        return self.start is not None

    @property
    def queued_ms(self) -> int:
        """Audio waiting in our queue (not yet sent to Twilio), ms."""
        return self._queued_frames * FRAME_MS + (FRAME_MS if self._partial else 0)

    @property
    def buffered_ms(self) -> int:
        """Audio sent to Twilio and (by our clock) not yet played, ms."""
        return max(0, self._play_end_ns - time.monotonic_ns()) // 1_000_000

    def play(self, mulaw: bytes, turn_id: int | None = None) -> None:
        """Queue mu-law 8 kHz audio of any length; it leaves as whole 20 ms frames, in order."""
        if self.closed or not mulaw:
            return
        if turn_id is not None and turn_id != self._turn:
            self._turn = turn_id
            self._queue.append(_TurnBoundary(turn_id))
        data = self._partial + mulaw if self._partial else mulaw
        whole = len(data) - len(data) % FRAME_BYTES
        queue = self._queue
        for i in range(0, whole, FRAME_BYTES):
            queue.append(data[i : i + FRAME_BYTES])
        self._queued_frames += whole // FRAME_BYTES
        self._partial = data[whole:]
        self._kick()

    def flush(self) -> None:
        """Pad a trailing partial frame with silence and queue it (end of an utterance)."""
        if self._partial:
            self._queue.append(pad_frame(self._partial))
            self._queued_frames += 1
            self._partial = b""
            self._kick()

    def mark(self, name: str, turn_id: int | None = None) -> MarkHandle:
        """Queue a mark after the audio queued so far; the handle says when it played or dropped."""
        handle = MarkHandle(name, self._turn if turn_id is None else turn_id, queued_ns=time.monotonic_ns())
        if self.closed:
            handle._resolve(MarkState.DROPPED, handle.queued_ns)
            return handle
        self.flush()
        self._queue.append(handle)
        self._kick()
        return handle

    def clear(self) -> int:
        """Barge-in: drop our queue and Twilio's buffer now (`clear` overtakes queued audio).

        Returns the number of frames dropped from our own queue.
        """
        if self.closed:
            return 0
        now = time.monotonic_ns()
        self._epoch += 1
        dropped_frames = self._queued_frames + (1 if self._partial else 0)
        queued_marks = [e for e in self._queue if isinstance(e, MarkHandle)]
        self._queue.clear()
        self._queued_frames = 0
        self._partial = b""
        self._play_end_ns = now  # Twilio empties its buffer on `clear`
        if self.recorder is not None:
            self.recorder.cleared(now)
        self.stats.clears += 1
        self.stats.frames_cleared += dropped_frames
        if self.started:
            self._clear_pending = True
            self._kick()
        for handle in queued_marks:
            self._settle(handle, MarkState.DROPPED, now, notify=False)
        if queued_marks:
            # Told on the next loop turn: the handler is usually inside its own barge-in code now.
            asyncio.get_running_loop().call_soon(self._notify, queued_marks)
        return dropped_frames

    def first_sent_ns(self, turn_id: int) -> int | None:
        """Monotonic ns when the first frame of `turn_id` left for Twilio (the last few turns only)."""
        return self._first_sent.get(turn_id)

    # ------------------------------------------------------------------ marks echoed

    def _on_echo(self, name: str, now_ns: int) -> None:
        handle = next((h for h in self._in_flight if h.name == name), None)
        if handle is None:
            self._protocol_error(f"echo of mark {name!r} we have not sent (or already resolved)")
            return
        self._in_flight.remove(handle)
        played = handle.epoch == self._epoch
        self._settle(handle, MarkState.PLAYED if played else MarkState.DROPPED, now_ns)

    def _settle(self, handle: MarkHandle, state: MarkState, now_ns: int, notify: bool = True) -> None:
        handle._resolve(state, now_ns)
        if state is MarkState.PLAYED:
            self.stats.marks_played += 1
        else:
            self.stats.marks_dropped += 1
        if notify:
            self._notify((handle,))

    def _notify(self, handles: Iterable[MarkHandle]) -> None:
        if self.closed:
            return  # after the stream ends the handler hears only on_close
        for handle in handles:
            try:
                self.handler.on_mark(handle)
            except Exception:
                self._handler_failed("on_mark")

    # ------------------------------------------------------------------ playout

    def _kick(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, until_ns: int | None) -> None:
        """Until `until_ns` (monotonic) or a kick, whichever first; None waits for a kick only."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = None
        if until_ns is not None:
            timer = loop.call_later(max(0, until_ns - time.monotonic_ns()) / 1e9, self._kick)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _playout(self) -> None:
        """The only writer of the socket after `start`: clear first, then frames and marks paced."""
        send = self.ws.send_str
        sid = self.stream_sid
        encoder = _ENCODER
        b64 = base64.b64encode
        queue = self._queue
        while True:
            if self._clear_pending:
                self._clear_pending = False
                await send(encoder.clear(sid))
                continue
            if not queue:
                if self._partial:  # a tail shorter than a frame: send it padded before Twilio runs dry
                    due = self._play_end_ns - FRAME_NS
                    if time.monotonic_ns() < due:
                        await self._sleep(due)
                        continue
                    self.flush()
                    continue
                await self._sleep(None)
                continue
            now = time.monotonic_ns()
            if self._play_end_ns < now:
                self._play_end_ns = now  # Twilio ran dry: playback restarts now
            entry = queue[0]
            if type(entry) is bytes:
                if self._play_end_ns - now + FRAME_NS > self._lead_ns:
                    await self._sleep(self._play_end_ns + self._refill_ns - self._lead_ns)
                    continue
                queue.popleft()
                self._queued_frames -= 1
                if self.recorder is not None:
                    self.recorder.agent(entry, self._play_end_ns)
                if self._played_tap is not None:
                    self._played_tap(entry, self._play_end_ns)
                self._play_end_ns += FRAME_NS
                if self._sending_turn not in self._first_sent:
                    self._stamp_first_sent(now)
                self.stats.frames_out += 1
                await send(encoder.media(sid, b64(entry).decode("ascii")))
            elif isinstance(entry, MarkHandle):
                queue.popleft()
                entry.state = MarkState.SENT
                entry.epoch = self._epoch
                entry.sent_ns = now
                self._in_flight.append(entry)
                await send(encoder.mark(sid, entry.name))
            else:
                queue.popleft()
                self._sending_turn = int(entry)

    def _stamp_first_sent(self, now_ns: int) -> None:
        self._first_sent[self._sending_turn] = now_ns
        if len(self._first_sent) > 8:
            del self._first_sent[min(self._first_sent)]

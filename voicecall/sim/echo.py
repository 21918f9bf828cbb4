"""EchoHandler: a `CallHandler` for tests and the CPU benchmark (`telephony.server --echo`).

It plays the caller's words back once they stop, and stops talking (`clear`) when they speak
over it. No workers, no models: it exercises the Twilio edge alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ipc.audio import FRAME_MS, ULAW_POWER

if TYPE_CHECKING:
    from voicecall.twilio.handler import CallStream
    from voicecall.twilio.playout import MarkHandle
    from voicecall.twilio.protocol import Start




class EchoHandler:
    """Repeats each caller utterance after they stop; a caller who talks over it gets `clear`.

    Speech is a frame louder than `threshold_dbfs`; an utterance ends after `silence_ms` of
    quiet and needs `min_speech_ms` of speech; `barge_in_ms` of speech while echoing clears.
    """

    def __init__(self, threshold_dbfs: float = -40.0, silence_ms: int = 300, min_speech_ms: int = 100,
                 barge_in_ms: int = 60, max_utterance_ms: int = 10_000) -> None:
        self._threshold = 10.0 ** (threshold_dbfs / 10.0)
        self._silence_frames = silence_ms // FRAME_MS
        self._min_speech_frames = min_speech_ms // FRAME_MS
        self._barge_frames = max(1, barge_in_ms // FRAME_MS)
        self._max_frames = max_utterance_ms // FRAME_MS
        self.stream: CallStream | None = None
        self._utterance: list[bytes] = []
        self._voiced = 0  # speech frames in the current utterance
        self._quiet = 0  # quiet frames since the last speech frame
        self._run = 0  # consecutive speech frames (barge-in detection)
        self._speaking: MarkHandle | None = None
        self.echoes = 0
        self.barge_ins = 0
        self.digits: list[str] = []
        self.close_reason = ""

    def on_start(self, stream: CallStream, start: Start) -> None:
        self.stream = stream

    def on_media(self, frame: bytes, chunk: int, media_ms: int, arrival_ns: int) -> None:
        loud = bool(frame) and float(ULAW_POWER[np.frombuffer(frame, dtype=np.uint8)].mean()) > self._threshold
        self._run = self._run + 1 if loud else 0
        if self._speaking is not None:
            if self._run >= self._barge_frames and self.stream is not None:
                self.barge_ins += 1
                self.stream.clear()
                self._speaking = None
                self._utterance, self._voiced, self._quiet = [], 0, 0
            else:
                return
        if not loud and not self._utterance:
            return
        self._utterance.append(frame)
        if loud:
            self._voiced += 1
            self._quiet = 0
        else:
            self._quiet += 1
        if self._quiet >= self._silence_frames or len(self._utterance) >= self._max_frames:
            self._finish_utterance()

    def _finish_utterance(self) -> None:
        frames = self._utterance[: len(self._utterance) - self._quiet]
        enough = self._voiced >= self._min_speech_frames
        self._utterance, self._voiced, self._quiet = [], 0, 0
        if not enough or self.stream is None:
            return
        self.echoes += 1
        self.stream.play(b"".join(frames))
        self._speaking = self.stream.mark(f"echo-{self.echoes}")

    def on_mark(self, mark: MarkHandle) -> None:
        if mark is self._speaking:
            self._speaking = None

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    async def on_close(self, reason: str) -> None:
        self.close_reason = reason
        self.stream = None

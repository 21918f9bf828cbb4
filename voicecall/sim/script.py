"""What a simulated call does (`CallScript` of `Utterance`s) and what it reports (`CallReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from ipc.audio import FRAME_BYTES, FRAME_MS, read_wav_mulaw


@dataclass
class Utterance:
    """Caller speech: `mulaw` (or a WAV path) after `pause_before_ms` of silence, or, with
    `barge_in_after_ms`, starting that long after the server's next audio begins."""

    mulaw: bytes = b""
    wav: str = ""
    pause_before_ms: int = 0
    barge_in_after_ms: int | None = None
    #: like a person: wait until the server has answered and gone quiet, then `pause_before_ms`
    after_reply: bool = False

    def audio(self) -> bytes:
        return self.mulaw if self.mulaw else read_wav_mulaw(self.wav)


@dataclass
class CallScript:
    utterances: list[Utterance] = field(default_factory=list)
    #: (ms after the stream starts, digit)
    dtmf: list[tuple[int, str]] = field(default_factory=list)
    #: silence after the last utterance (to hear the reply) before `stop`
    tail_ms: int = 2000
    #: hard limit on the whole call
    max_s: float = 120.0


@dataclass
class MarkRecord:
    name: str
    received_ns: int
    echoed_ns: int = 0
    dropped: bool = False  # echoed because of `clear`, its audio never played


@dataclass
class CallReport:
    call_sid: str = ""
    stream_sid: str = ""
    busy: bool = False
    twiml: str = ""
    #: `<Redirect>` targets followed before the final TwiML (a full box sent the call to a peer)
    redirects: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    protocol_errors: list[str] = field(default_factory=list)
    frames_sent: int = 0
    media_received: int = 0
    bytes_received: int = 0
    clears: int = 0
    heard_ms: int = 0
    #: per utterance answered: end of caller speech (last loud frame) -> first outbound audio, ms
    response_ms: list[float] = field(default_factory=list)
    #: per utterance answered: end of caller speech -> the first mark after the answer began could
    #: echo (the audio before it had played): when the caller has provably heard the answer start
    answer_heard_ms: list[float] = field(default_factory=list)
    #: per barge-in: caller speech start -> `clear` received, ms
    barge_in_stop_ms: list[float] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    #: most audio ever queued at "Twilio" ahead of playout, ms (the server's pacing bound)
    max_buffered_ms: float = 0.0
    closed_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def voiced_span_ms(mulaw: bytes, threshold_dbfs: float = -40.0) -> tuple[int, int]:
    """(onset, end) ms of the loud part of caller audio: what a listener calls "speech".

    A WAV's silent lead-in and tail must not count, or the reply would seem to come sooner
    (or a barge-in later) than it did.
    """
    import numpy as np

    from ipc.audio import ulaw_decode

    n = len(mulaw) // FRAME_BYTES
    if n == 0:
        return 0, 0
    pcm = ulaw_decode(mulaw[: n * FRAME_BYTES]).astype(np.float64).reshape(n, FRAME_BYTES) / 32768.0
    level = 10 * np.log10(np.maximum((pcm**2).mean(axis=1), 1e-12))
    loud = np.flatnonzero(level > threshold_dbfs)
    if not len(loud):
        return 0, n * FRAME_MS
    return int(loud[0]) * FRAME_MS, (int(loud[-1]) + 1) * FRAME_MS

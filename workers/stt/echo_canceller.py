"""Take the agent's echo out of the caller's audio before Silero, Whisper and Smart Turn hear it.

The echo gate (echo_gate.py) keeps the agent's voice coming back from starting a turn, but a
caller who speaks while it echoes reaches Whisper with the agent's words under their own: on a
noisy speakerphone line an espeak "Mm-hmm" was transcribed as the agent's "way in the afternoon,
May quarter, May" (no backchannel, so the answer was cancelled), and a paused caller's two halves
came back with the agent's words between them.

Each time the gate finds a stretch of the line that is the agent's echo alone, the filter it fitted
(a few ms of taps around the echo's delay) is kept here, anchored to the call's sample clock, and
subtracted from every later frame while the agent's audio may still be echoing:

    echo(s) = sum over m of taps[m] * played(t(s) - (max_delay - m) samples),   t(s) = base + s / 8 kHz

The sample clock, not each frame's arrival stamp: frames arrive with a few ms of jitter, and 1 ms
of misalignment (8 samples) leaves most of a voice's echo in place. While the subtraction would
make the line louder (the echo path changed, the fit went stale) frames are left as they came, so
a wrong fit costs little more than the echo it fails to remove. That is judged over the last half
second or so, not frame by frame: under a caller talking 20 dB over the echo, their voice's
chance correlation with it in one 20 ms frame outweighs the echo itself in about half the frames.
The raw audio is kept for the gate itself, which must judge what the line really sent. What it
does not do: adapt during double talk (fits come only from echo alone), or follow a reverberant
room's long tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.stt.echo_gate import SAMPLE_RATE, EchoReference

NS_PER_SAMPLE = 1_000_000_000 // SAMPLE_RATE  # 125 000: exact at 8 kHz, so no drift from rounding
#: Per frame, how much of the running sums of power in and out is kept (~0.7 s of memory).
DECAY = 0.97
#: A frame the estimate would make this much louder is left alone whatever the running sums say
#: (the echo stopped while the fit goes on predicting it).
MAX_FRAME_RISE = 4.0


@dataclass(frozen=True)
class EchoPath:
    """A fitted echo path: `taps[m]` times what played `max_delay - m` samples before inbound
    sample s, which arrived (on the sample clock the fit was made on) at `base_ns + s` samples."""

    taps: np.ndarray
    max_delay: int
    base_ns: int


class EchoCanceller:
    """Subtracts one call's echo, as last fitted, from its inbound frames."""

    def __init__(self, reference: EchoReference) -> None:
        self.reference = reference
        self.path: EchoPath | None = None
        self.frames = 0  # frames the echo was taken out of
        self.skipped = 0  # frames left as they came: the fit would have made them louder
        self.removed_db_sum = 0.0  # over `frames`: how much quieter each became
        self._power_in = 0.0  # running sums (DECAY) of each frame's power before and after
        self._power_out = 0.0

    def learn(self, path: EchoPath) -> None:
        """The gate fitted the echo on a stretch of it alone: cancel with this fit from now on."""
        self.path = path
        self._power_in = self._power_out = 0.0  # a fresh fit is judged afresh (it just explained the echo)

    def estimate(self, first: int, n: int) -> np.ndarray | None:
        """The echo expected in inbound samples [first, first + n) (float64), None without a fit."""
        path = self.path
        if path is None:
            return None
        span = len(path.taps) - 1
        start_ns = path.base_ns + (first - path.max_delay) * NS_PER_SAMPLE
        played = self.reference.played(start_ns, n + span).astype(np.float64)
        if not played.any():
            return None
        return np.correlate(played, path.taps, mode="valid")

    def cancel(self, pcm: np.ndarray, first: int) -> np.ndarray:
        """`pcm` (int16, inbound samples from absolute `first` on) with the echo taken out, or
        `pcm` itself when there is no fit, nothing played, or taking it out has not been helping."""
        echo = self.estimate(first, len(pcm))
        if echo is None:
            return pcm
        x = pcm.astype(np.float64)
        left = x - echo
        before, after = float(x @ x), float(left @ left)
        self._power_in = DECAY * self._power_in + before
        self._power_out = DECAY * self._power_out + after
        if self._power_out >= self._power_in or after > MAX_FRAME_RISE * before:
            self.skipped += 1
            return pcm
        self.frames += 1
        self.removed_db_sum += 10 * np.log10(before / max(after, 1.0))
        return np.clip(np.rint(left), -32768, 32767).astype(np.int16)

    @property
    def removed_db_mean(self) -> float:
        """How much quieter, on average, the frames the echo was taken out of became (dB)."""
        return self.removed_db_sum / self.frames if self.frames else 0.0

"""Native-rate float audio in, whole 20 ms mu-law 8 kHz frames out, seamless across chunks.

A voice produces audio in pieces (a Piper sentence, a CSM frame group); resampling each piece on
its own would put a filter edge, an audible click, at every boundary. `soxr.ResampleStream` keeps
the filter state between pieces, and the frames left over (less than 160 samples) wait for the
next piece, so every record leaving the worker is a whole number of 160-byte frames.
"""

from __future__ import annotations

import numpy as np

from ipc.audio import FRAME_BYTES, SAMPLE_RATE, ulaw_encode


class MulawStream:
    """One utterance's audio: `push` float chunks, `finish` once; both return whole frames."""

    def __init__(self, in_rate: int, quality: str = "HQ", gain: float = 1.0) -> None:
        import soxr  # noqa: PLC0415 - light, but only the tts worker needs it

        self._resampler = soxr.ResampleStream(in_rate, SAMPLE_RATE, 1, dtype="float32", quality=quality)
        self._gain = gain
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, audio: np.ndarray) -> bytes:
        """Resample one chunk; returns mu-law for every whole frame ready so far (maybe b"")."""
        return self._frames(self._resampler.resample_chunk(np.asarray(audio, dtype=np.float32)), last=False)

    def finish(self) -> bytes:
        """Flush the resampler; the last partial frame is padded with silence."""
        return self._frames(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True), last=True)

    def _frames(self, out: np.ndarray, last: bool) -> bytes:
        samples = np.concatenate([self._pending, out]) if self._pending.size else out
        whole = samples.size - samples.size % FRAME_BYTES
        if last and whole < samples.size:
            samples = np.concatenate([samples, np.zeros(FRAME_BYTES - samples.size % FRAME_BYTES, np.float32)])
            whole = samples.size
        self._pending = samples[whole:]
        if whole == 0:
            return b""
        return ulaw_encode(np.clip(samples[:whole] * self._gain, -1.0, 1.0))

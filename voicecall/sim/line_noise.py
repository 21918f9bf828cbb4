"""A noisy phone line for the simulated caller: steady background noise under everything it sends.

Why: generated callers are otherwise digital silence between words (mu-law 0xFF), which no real
line is. A caller in a car, a kitchen or on a cheap handset sends a noise floor all the time, in
the pauses too, and that is where the end-of-turn rules, the VAD's speech end and Whisper's
no-speech guess are decided. `LineNoise(-45)` adds noise at -45 dBFS RMS to every frame the
simulated call sends (caller speech and the silence between), so the turn bench can be run on a
line like that: `voicecall turn-bench --noise-dbfs -45`.

The noise is white noise tilted towards the low frequencies (one-pole low-pass, the way room and
road noise fall off) and band-limited to the phone band by the mu-law round trip; the same seed is
the same noise on every run.
"""

from __future__ import annotations

import numpy as np

from ipc.audio import ulaw_decode, ulaw_encode

#: The quietest and loudest floor accepted: below -70 dBFS mu-law rounds most of it away; above
#: -20 dBFS the noise is as loud as a quiet talker, which no turn rule is meant to survive.
MIN_DBFS, MAX_DBFS = -70.0, -20.0
_TILT = 0.6  # one-pole low-pass coefficient: ~6 dB more energy below 1 kHz than above 2 kHz


class LineNoise:
    """Background noise at `dbfs` (RMS, full scale = 0 dB) mixed into mu-law frames, continuous
    from one frame to the next."""

    def __init__(self, dbfs: float, seed: int = 0) -> None:
        if not MIN_DBFS <= dbfs <= MAX_DBFS:
            raise ValueError(f"line noise of {dbfs:g} dBFS is outside {MIN_DBFS:g}..{MAX_DBFS:g} dBFS")
        self.dbfs = dbfs
        self._rng = np.random.default_rng(seed)
        self._last = 0.0  # the filter's state, carried so frame edges do not click
        # the low-pass lowers the RMS of unit white noise to sqrt((1-a)^2 / (1-a^2)) = sqrt((1-a)/(1+a))
        self._scale = 32768.0 * 10 ** (dbfs / 20) / np.sqrt((1 - _TILT) / (1 + _TILT))

    def samples(self, n: int) -> np.ndarray:
        """The next `n` samples of the noise, float, in int16 units."""
        white = self._rng.standard_normal(n) * (1 - _TILT)
        out = np.empty(n)
        last = self._last
        for i, v in enumerate(white):  # n is one frame (160) at a time on the live path: cheap enough
            last = v + _TILT * last
            out[i] = last
        self._last = last
        return out * self._scale

    def mix(self, mulaw: bytes) -> bytes:
        """`mulaw` with the next stretch of noise added (clipped to int16), mu-law again."""
        pcm = ulaw_decode(mulaw).astype(np.float64) + self.samples(len(mulaw))
        return ulaw_encode(np.clip(np.round(pcm), -32768, 32767).astype(np.int16))

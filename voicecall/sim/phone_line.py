"""A phone line for the simulated caller: a steady noise floor under everything it sends, the
caller's level as their handset delivers it, and the agent's own voice coming back (echo).

Why: generated callers are otherwise loud (Piper at 0.7 of full scale) with digital silence between
words (mu-law 0xFF), which no real line is. A caller in a car, a kitchen or on a cheap handset
sends a noise floor all the time, in the pauses too, and that is where the end-of-turn rules, the
VAD's speech end and Whisper's no-speech guess are decided; a caller far from the microphone is
20 dB quieter. `PhoneLine(noise_dbfs=-45, level_db=-15)` turns the caller down by 15 dB and adds
noise at -45 dBFS RMS to every frame the simulated call sends (speech and the silence between), so
the benches can be run on a line like that: `voicecall turn-bench --noise-dbfs -45 --level-db -15`.

Echo: a speakerphone, a handset without an echo canceller or a two-wire hybrid sends back part of
what the caller hears. `PhoneLine(echo_db=-30, echo_delay_ms=40)` adds what the simulated call's
playback played 40 ms earlier, 30 dB down, to every frame it sends (the caller's speech and the
pauses alike), so the benches can show what an echoing line does to barge-in:
`voicecall turn-bench --echo-db -30`.

Band: an analogue handset and the PSTN pass only the telephone band (ITU-T G.712: 300-3400 Hz),
so a male voice's fundamental (~100-150 Hz) is gone and the end-of-turn model, the VAD and
Whisper hear its harmonics only. Generated callers keep everything from 0 to 4 kHz:
`PhoneLine(band=True)` filters the caller's speech (not the noise, which is the caller's room and
line already) through a 4th-order Butterworth band-pass at those edges, causal and continuous from
one frame to the next like a real channel (its delay is under 1 ms in the voice band):
`voicecall turn-bench --band`.

The noise is white noise tilted towards the low frequencies (one-pole low-pass, the way room and
road noise fall off), band-limited to the phone band by the mu-law round trip; the same seed is
the same noise on every run.
"""

from __future__ import annotations

import numpy as np

from ipc.audio import ulaw_decode, ulaw_encode

#: The quietest and loudest floor accepted: below -70 dBFS mu-law rounds most of it away; above
#: -20 dBFS the noise is as loud as a quiet talker, which no turn rule is meant to survive.
MIN_DBFS, MAX_DBFS = -70.0, -20.0
#: The caller's level change accepted, dB: from a whisper-quiet handset to a little louder.
MIN_LEVEL_DB, MAX_LEVEL_DB = -40.0, 6.0
#: Echo return accepted, dB below what was played: a bare speakerphone (-6) to a good canceller's leftover.
MIN_ECHO_DB, MAX_ECHO_DB = -70.0, -6.0
#: Echo delay accepted, ms after playout: a hybrid's few ms to a long mobile path.
MAX_ECHO_DELAY_MS = 500
#: The telephone band's edges, Hz (ITU-T G.712).
BAND_HZ = (300.0, 3400.0)
_TILT = 0.6  # one-pole low-pass coefficient: ~6 dB more energy below 1 kHz than above 2 kHz
_KERNEL = _TILT ** np.arange(64)  # its impulse response, to where it no longer moves a double


class PhoneBand:
    """A 4th-order Butterworth band-pass over `BAND_HZ` at 8 kHz: two high-pass and two low-pass
    biquads (RBJ's bilinear forms, Butterworth Qs), transposed direct form II, state kept between
    calls so a stream filtered frame by frame is the stream filtered at once."""

    _QS = (0.5412, 1.3066)  # 1 / (2 cos(pi/8)), 1 / (2 cos(3 pi/8)): a 4th-order Butterworth as two biquads

    def __init__(self, low_hz: float = BAND_HZ[0], high_hz: float = BAND_HZ[1], rate: int = 8000) -> None:
        self.sections: list[tuple[float, float, float, float, float]] = []
        for f0, high_pass in ((low_hz, True), (high_hz, False)):
            w0 = 2 * np.pi * f0 / rate
            cos, sin = float(np.cos(w0)), float(np.sin(w0))
            for q in self._QS:
                alpha = sin / (2 * q)
                a0 = 1 + alpha
                b = ((1 + cos) / 2, -(1 + cos), (1 + cos) / 2) if high_pass else ((1 - cos) / 2, 1 - cos, (1 - cos) / 2)
                self.sections.append((b[0] / a0, b[1] / a0, b[2] / a0, -2 * cos / a0, (1 - alpha) / a0))
        self._state = [[0.0, 0.0] for _ in self.sections]

    def filter(self, x: np.ndarray) -> np.ndarray:
        """The next stretch of the stream, filtered (float in, float out)."""
        y = [float(v) for v in x]
        for (b0, b1, b2, a1, a2), st in zip(self.sections, self._state, strict=True):
            z1, z2 = st
            for i, v in enumerate(y):
                out = b0 * v + z1
                z1 = b1 * v - a1 * out + z2
                z2 = b2 * v - a2 * out
                y[i] = out
            st[0], st[1] = z1, z2
        return np.asarray(y, dtype=np.float64)


class PhoneLine:
    """The caller's audio scaled by `level_db` with noise at `noise_dbfs` (RMS, full scale = 0 dB;
    None: no noise) added, continuous from one frame to the next; and with `echo_db` (None: none)
    the agent's audio that played `echo_delay_ms` earlier, that many dB down; with `band` the
    caller's speech through the telephone band first."""

    def __init__(self, noise_dbfs: float | None = None, level_db: float = 0.0, seed: int = 0,
                 echo_db: float | None = None, echo_delay_ms: int = 40, band: bool = False) -> None:
        check(noise_dbfs, level_db, echo_db, echo_delay_ms)
        self.noise_dbfs, self.level_db, self.band = noise_dbfs, level_db, band
        self._band = PhoneBand() if band else None
        self.echo_db, self.echo_delay_ms = echo_db, echo_delay_ms
        self._gain = 10 ** (level_db / 20)
        self._echo_gain = 0.0 if echo_db is None else 10 ** (echo_db / 20)
        self._rng = np.random.default_rng(seed)
        self._tail = np.zeros(len(_KERNEL) - 1)  # the filter's input history, so frame edges do not click
        # the low-pass lowers the RMS of unit white noise to sqrt((1-a)^2 / (1-a^2)) = sqrt((1-a)/(1+a))
        self._scale = 0.0 if noise_dbfs is None else \
            32768.0 * 10 ** (noise_dbfs / 20) / np.sqrt((1 - _TILT) / (1 + _TILT))

    def noise(self, n: int) -> np.ndarray:
        """The next `n` samples of the noise, float, in int16 units."""
        white = np.concatenate([self._tail, self._rng.standard_normal(n) * (1 - _TILT)])
        # y[i] = x[i] + a*y[i-1], as a convolution with a^k: a^64 < 1e-14, so the kernel's end and
        # the white-noise tail carried from the last call make it the recursive filter, frame edges too
        out = np.convolve(white, _KERNEL)[len(self._tail): len(self._tail) + n]
        self._tail = white[-len(_KERNEL) + 1:]
        return out * self._scale

    def mix(self, mulaw: bytes, played: bytes | None = None) -> bytes:
        """`mulaw` at the caller's level with the next stretch of noise added, and the echo of
        `played` (the agent's audio heard `echo_delay_ms` before, as long as `mulaw`; None: none),
        clipped, mu-law again."""
        pcm = ulaw_decode(mulaw).astype(np.float64) * self._gain
        if self._band is not None:
            pcm = self._band.filter(pcm)
        if self.noise_dbfs is not None:
            pcm += self.noise(len(mulaw))
        if played is not None and self.echo_db is not None:
            pcm += ulaw_decode(played).astype(np.float64) * self._echo_gain
        return ulaw_encode(np.clip(np.round(pcm), -32768, 32767).astype(np.int16))


def check(noise_dbfs: float | None, level_db: float, echo_db: float | None = None, echo_delay_ms: int = 40) -> None:
    """ValueError naming the setting and its range when one is out of it."""
    if echo_db is not None and not MIN_ECHO_DB <= echo_db <= MAX_ECHO_DB:
        raise ValueError(f"echo of {echo_db:g} dB is outside {MIN_ECHO_DB:g}..{MAX_ECHO_DB:g} dB")
    if not 0 <= echo_delay_ms <= MAX_ECHO_DELAY_MS:
        raise ValueError(f"echo delay of {echo_delay_ms} ms is outside 0..{MAX_ECHO_DELAY_MS} ms")
    if noise_dbfs is not None and not MIN_DBFS <= noise_dbfs <= MAX_DBFS:
        raise ValueError(f"line noise of {noise_dbfs:g} dBFS is outside {MIN_DBFS:g}..{MAX_DBFS:g} dBFS")
    if not MIN_LEVEL_DB <= level_db <= MAX_LEVEL_DB:
        raise ValueError(f"caller level {level_db:g} dB is outside {MIN_LEVEL_DB:g}..{MAX_LEVEL_DB:g} dB")


def phone_line(noise_dbfs: float | None, level_db: float, seed: int, echo_db: float | None = None,
               echo_delay_ms: int = 40, band: bool = False) -> PhoneLine | None:
    """The line for these settings; None for a clean, full-band, full-level one without echo (nothing to change)."""
    if noise_dbfs is None and level_db == 0.0 and echo_db is None and not band:
        return None
    return PhoneLine(noise_dbfs, level_db, seed, echo_db, echo_delay_ms, band)

"""Is the "caller speech" that just started the agent's own voice coming back on the line?

A speakerphone, a handset without an echo canceller or a two-wire hybrid sends part of what the
caller hears back to us. Silero does not care how loud speech is (the agent's answers 40 dB down
still read P >= 0.6 in 60% of windows), so without this the agent stops itself within 160 ms of
every answer on such a line and then answers its own words. Telephony sends the stt worker every
frame it plays, stamped with when the caller hears it (`KIND_PLAYED` records); when an onset
comes (or a voice in a caller's pause) while that audio could still be echoing, the worker asks
`EchoReference.echo_of`:

    inbound x: the onset's voiced run (at most      reference r: what played from max_delay_ms
    `window_ms`), or the pause so far                before x began until x ended
    1. normalised cross-correlation of x with r at every delay in [-40 ms, max_delay_ms] (FFT)
    2. least squares: x ~ a short filter (taps around the best delay) applied to r
    3. echo when that filter leaves at most 1/`explained` of x's energy (the agent's audio explains
       the sound), or leaves only the line's own noise floor while matching well, or leaves next to
       nothing (an echo of the agent's quiet tail, a few mu-law steps)
    4. not so, but matching: the same fit stretch by stretch (`PIECE_MS`), each with its own delay
       near the best one, since playback that nearly ran dry moves the path by a few samples

A caller talking over the agent is not explained by the agent's audio (the residual is their
voice), so a real barge-in is never taken for echo; the check runs only at an onset while the
agent's audio is recent (2-10 ms, at most once per `echo_min_speech_ms` while echo goes on).
The fit of an echo found alone is what the echo canceller (echo_canceller.py) then takes out of
the audio Silero and Whisper hear. What it does not do: model a long acoustic tail (the filter
spans a few ms around the delay: a handset's or a hybrid's echo, not a reverberant room's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 8000
_NS = 1_000_000_000
#: Echo that arrives before telephony's estimate of when its audio played (Twilio started
#: playback a little sooner than the estimate): searched too, ms.
EARLY_MS = 40
#: Taps on each side of the best delay in the least-squares fit (2 ms: a hybrid's dispersion).
HALF_TAPS = 16
#: An echo under a noisy line's floor counts only when it matches this well (normalised correlation;
#: a caller's voice matches the agent's audio at ~0.4 at best by chance, over 320 ms, but a voice
#: leaves far more than the floor, so this only keeps line noise alone from being called echo).
MIN_MATCH = 0.3
#: An echo this quiet (dBFS RMS) is a few mu-law steps either side of zero, which no fit follows
#: closely, yet Silero, deaf to level, may call it speech: what the fit leaves of it below this
#: level (twice its power) is taken for echo when the agent's audio matches it (`MIN_MATCH`).
QUIET_DBFS = -70.0
_QUIET_POWER = (32768.0 * 10 ** (QUIET_DBFS / 20)) ** 2
#: Piecewise fit: stretches of the sound fitted each on its own (ms), and how far each may look
#: for its own delay around the whole sound's best one (ms). Playback that ran nearly dry restarts
#: a few ms later than telephony's estimate of it (Twilio's buffer, like any jitter buffer, plays
#: from when the late audio came): a step of 0.25 ms inside one window took a clean echo's fit
#: from 30 to 8.5 dB, one of 1 ms to as little as 3 dB; live, under load, echoes fitted 5.4-5.7 dB
#: were taken for the caller and the agent stopped for its own voice.
PIECE_MS = 60
PIECE_SEARCH_MS = 4
#: Reference kept, beyond the longest delay and the inbound window, ms.
KEEP_MS = 500


@dataclass(frozen=True)
class EchoVerdict:
    """What the check found: `echo` True when the agent's audio explains the sound."""

    echo: bool
    delay_ms: float  # where the agent's audio matched best
    correlation: float  # normalised, at that delay
    explained_db: float  # energy of the sound over what the fit leaves of it
    echo_db: float  # the echo's level relative to the audio played (the fit's gain), dB
    #: The fitted filter: taps[m] times what played `max_delay - m` samples before each inbound
    #: sample (taking `end_ns` as one sample past the last), for the echo canceller.
    taps: np.ndarray | None = field(default=None, compare=False, repr=False)
    max_delay: int = 0


class EchoReference:
    """The audio one call's caller heard lately, on the monotonic clock of when it played."""

    def __init__(self, max_delay_ms: int, window_ms: int) -> None:
        self.max_delay_ms = max_delay_ms
        self.window_ms = window_ms
        self._keep = (max_delay_ms + EARLY_MS + window_ms + KEEP_MS) * SAMPLE_RATE // 1000
        self._start_ns = 0  # when sample 0 of `_buf` played
        self._buf = np.zeros(2 * self._keep, dtype=np.float32)  # shifted down when full, never regrown
        self._len = 0
        self.last_play_end_ns = 0  # when the newest audio stops playing

    def add(self, pcm: np.ndarray, play_ns: int) -> None:
        """A frame the caller hears from `play_ns` on (int16 PCM). A frame placed over earlier ones
        replaces them (after a `clear`, playback restarts where the dropped audio would have been)."""
        if not self._len or play_ns - self._start_ns > (self._len + self._keep) * _NS // SAMPLE_RATE:
            self._start_ns, self._len = play_ns, 0  # the first, or after a long quiet: start afresh
        at = max(0, (play_ns - self._start_ns) * SAMPLE_RATE // _NS)
        end = at + len(pcm)
        if end > len(self._buf):  # keep the last `_keep` samples up to this frame's end
            drop = min(end - self._keep, self._len)
            self._buf[: self._len - drop] = self._buf[drop : self._len]
            self._len -= drop
            self._start_ns += drop * _NS // SAMPLE_RATE
            at, end = at - drop, end - drop
        if at > self._len:
            self._buf[self._len : at] = 0.0
        self._buf[at:end] = pcm
        self._len = max(self._len, end)
        self.last_play_end_ns = max(self.last_play_end_ns, play_ns + len(pcm) * _NS // SAMPLE_RATE)

    def recent(self, now_ns: int) -> bool:
        """Could the agent's audio still be echoing at `now_ns`?"""
        return bool(self.last_play_end_ns) and now_ns - self.last_play_end_ns <= (self.max_delay_ms + self.window_ms) * 1_000_000

    def played(self, start_ns: int, n: int) -> np.ndarray:
        """`n` samples of what played from `start_ns` on (zeros where nothing did)."""
        out = np.zeros(n, dtype=np.float32)
        at = round((start_ns - self._start_ns) * SAMPLE_RATE / _NS)
        lo, hi = max(at, 0), min(at + n, self._len)
        if hi > lo:
            out[lo - at : hi - at] = self._buf[lo:hi]
        return out

    def echo_of(self, x: np.ndarray, end_ns: int, floor_power: float, explained_db: float) -> EchoVerdict:
        """Is `x` (int16 PCM of the call, its last sample arriving at `end_ns`) the agent's audio
        coming back? `floor_power`: the line's noise (mean square) when nobody talks."""
        x = x.astype(np.float64)
        n = len(x)
        early = EARLY_MS * SAMPLE_RATE // 1000
        span = (self.max_delay_ms + EARLY_MS) * SAMPLE_RATE // 1000
        # r[j] played at x's start - max_delay + j: x[i] ~ r[i + k] means an echo delay of max_delay - k
        r = self.played(end_ns - (n + span - early) * _NS // SAMPLE_RATE, n + span).astype(np.float64)
        ex = float(x @ x)
        if ex <= 0.0 or not r.any():
            return EchoVerdict(False, 0.0, 0.0, 0.0, -120.0)
        size = 1 << (n + len(r) - 1).bit_length()
        corr = np.fft.irfft(np.conj(np.fft.rfft(x, size)) * np.fft.rfft(r, size), size)[: span + 1]
        c2 = np.concatenate([[0.0], np.cumsum(r * r)])
        er = c2[n : n + span + 1] - c2[: span + 1]  # energy of r[k : k + n]
        ncc = np.abs(corr) / np.sqrt(ex * np.maximum(er, 1e-9))
        ncc[er < 1e-6 * ex] = 0.0  # nothing played there: no match, however the numbers fall
        k = int(np.argmax(ncc))
        delay_ms = (span - k) * 1000 / SAMPLE_RATE - EARLY_MS
        lo, hi = max(0, k - HALF_TAPS), min(span, k + HALF_TAPS)
        a = np.stack([r[j : j + n] for j in range(lo, hi + 1)], axis=1)
        h, *_ = np.linalg.lstsq(a, x, rcond=None)
        fit = a @ h
        resid = float(np.sum((x - fit) ** 2))
        explained = 10 * np.log10(ex / max(resid, 1e-9))
        gain = float(fit @ fit) / max(float(er[k]), 1e-9)
        echo_db = 10 * np.log10(max(gain, 1e-12))
        # Under a noisy line's floor the fit cannot remove much, but what it leaves is that floor (no
        # voice); an echo of a quiet tail leaves next to nothing. Either way the agent's audio must match.
        left = resid / n
        under_floor = left <= 2.0 * floor_power and float(fit @ fit) / n >= 0.1 * floor_power
        echo = explained >= explained_db or (ncc[k] >= MIN_MATCH and (under_floor or left <= 2.0 * _QUIET_POWER))
        if not echo and ncc[k] >= MIN_MATCH:
            # one path for the whole sound did not explain it: the path may have moved inside it
            pieces = _piecewise_fit(x, r, k, span)
            if pieces is not None and 10 * np.log10(ex / max(pieces[0], 1e-9)) >= explained_db:
                echo, explained = True, 10 * np.log10(ex / max(pieces[0], 1e-9))
                h, lo = pieces[1], pieces[2]  # the newest stretch's path, for the canceller
        return EchoVerdict(bool(echo), round(delay_ms, 1), round(float(ncc[k]), 3), round(float(explained), 1),
                           round(float(echo_db), 1), taps=h, max_delay=span - early - lo)


def _piecewise_fit(x: np.ndarray, r: np.ndarray, k: int, span: int) -> tuple[float, np.ndarray, int] | None:
    """`x` in stretches of `PIECE_MS`, each fitted to the reference `r` with its own short filter
    around its own best delay (within `PIECE_SEARCH_MS` of `k`): (the residual energy summed,
    the last stretch's taps, their first lag), or None when `x` is too short to split."""
    n, piece = len(x), PIECE_MS * SAMPLE_RATE // 1000
    if n < 2 * piece:
        return None
    search = PIECE_SEARCH_MS * SAMPLE_RATE // 1000
    bounds = [*range(0, n - piece // 2, piece), n]  # a remainder under half a stretch joins the last
    lags = range(max(0, k - search), min(span, k + search) + 1)
    resid, taps, first = 0.0, np.zeros(0), 0
    for s0, s1 in zip(bounds[:-1], bounds[1:], strict=True):
        seg = x[s0:s1]
        score = [abs(float(seg @ r[s0 + j : s1 + j])) / np.sqrt(float(r[s0 + j : s1 + j] @ r[s0 + j : s1 + j]) + 1e-9)
                 for j in lags]
        kj = lags[int(np.argmax(score))]
        lo, hi = max(0, kj - HALF_TAPS), min(span, kj + HALF_TAPS)
        a = np.stack([r[s0 + j : s1 + j] for j in range(lo, hi + 1)], axis=1)
        h, *_ = np.linalg.lstsq(a, seg, rcond=None)
        resid += float(np.sum((seg - a @ h) ** 2))
        taps, first = h, lo
    return resid, taps, first

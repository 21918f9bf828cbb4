"""One call's recent inbound audio with the stamps of every frame it came in.

Why keep stamps per frame: the turn's timings are stated in the caller's media time (Twilio's
timestamp, which has gaps when packets are lost) and in arrival time at telephony (monotonic ns),
while VAD and Whisper work in sample positions. This maps a sample position back to both, and
holds the PCM that a transcription needs (with the agent's echo taken out, when there is one; the
line's raw audio alongside, which the echo gate judges). While nobody speaks it is trimmed to a
short history (the prefix padding), so memory per idle call stays in kilobytes.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 8000


class CallAudio:
    """int16 8 kHz PCM from sample `base` on, plus (start sample, media ms, arrival ns, dBFS) per frame."""

    def __init__(self) -> None:
        self.base = 0  # absolute sample index of _pcm[0]
        self._pcm = np.zeros(SAMPLE_RATE * 4, dtype=np.int16)
        self._raw = np.zeros(SAMPLE_RATE * 4, dtype=np.int16)  # as the line sent it (echo and all)
        self._len = 0
        self._starts: list[int] = []
        self._media: list[int] = []
        self._arrival: list[int] = []
        self._dbfs: list[float] = []

    @property
    def end(self) -> int:
        """Absolute sample index one past the newest sample."""
        return self.base + self._len

    def append(self, pcm: np.ndarray, media_ms: int, arrival_ns: int, raw: np.ndarray | None = None) -> None:
        """One frame: `pcm` as the models hear it, `raw` as the line sent it (None: the same)."""
        if self._len + len(pcm) > len(self._pcm):
            size = max(2 * len(self._pcm), self._len + len(pcm))
            self._pcm, self._raw = (np.concatenate([a[: self._len], np.zeros(size - self._len, dtype=np.int16)])
                                    for a in (self._pcm, self._raw))
        self._pcm[self._len : self._len + len(pcm)] = pcm
        self._raw[self._len : self._len + len(pcm)] = pcm if raw is None else raw
        self._starts.append(self.end)
        self._media.append(media_ms)
        self._arrival.append(arrival_ns)
        power = float(np.mean(np.square(pcm, dtype=np.float64))) / (32768.0**2) if len(pcm) else 0.0
        self._dbfs.append(10.0 * np.log10(power + 1e-12))
        self._len += len(pcm)

    def _frame(self, sample: int) -> int:
        """Index of the kept frame holding absolute `sample` (clamped to the kept range)."""
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= sample:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def media_ms(self, sample: int) -> int:
        """The caller's media time (ms) of absolute `sample`."""
        if not self._starts:
            return 0
        i = self._frame(sample)
        return self._media[i] + (sample - self._starts[i]) * 1000 // SAMPLE_RATE

    def arrival_ns(self, sample: int) -> int:
        """Arrival time at telephony of the frame holding `sample`."""
        return self._arrival[self._frame(sample)] if self._starts else 0

    def floor_power(self, frames: int = 100) -> float:
        """The line's quiet level: the 10th percentile of the last `frames` frames' mean square
        (int16 units), 0 before any audio."""
        if not self._dbfs:
            return 0.0
        dbfs = float(np.percentile(self._dbfs[-frames:], 10))
        return 10 ** (dbfs / 10) * 32768.0**2

    def pcm(self, start: int, stop: int) -> np.ndarray:
        """A copy of absolute samples [start, stop) (clamped to what is kept)."""
        return self._copy(self._pcm, start, stop)

    def raw(self, start: int, stop: int) -> np.ndarray:
        """Like `pcm`, as the line sent it (before the echo was taken out)."""
        return self._copy(self._raw, start, stop)

    def _copy(self, buf: np.ndarray, start: int, stop: int) -> np.ndarray:
        a = min(max(start - self.base, 0), self._len)
        b = min(max(stop - self.base, a), self._len)
        return buf[a:b].copy()

    def last_loud_end(self, end: int, floor_dbfs: float, max_back: int) -> int:
        """End (absolute sample) of the last frame at or above `floor_dbfs` before `end`,
        looking back at most `max_back` samples; `end - max_back` if none is loud."""
        if not self._starts:
            return end
        i = self._frame(end - 1)
        limit = end - max_back
        while i >= 0 and self._starts[i] >= limit:
            if self._dbfs[i] >= floor_dbfs:
                nxt = self._starts[i + 1] if i + 1 < len(self._starts) else self.end
                return min(nxt, end)
            i -= 1
        return max(limit, self.base)

    def trim(self, keep_from: int) -> None:
        """Drop samples (and frames wholly) before absolute `keep_from`."""
        cut = min(max(keep_from - self.base, 0), self._len)
        if cut <= 0:
            return
        drop = self._frame(keep_from)  # keep the frame holding keep_from
        first_kept = self._starts[drop] if self._starts else keep_from
        cut = min(max(first_kept - self.base, 0), self._len)
        self._pcm[: self._len - cut] = self._pcm[cut : self._len]
        self._raw[: self._len - cut] = self._raw[cut : self._len]
        self._len -= cut
        self.base += cut
        del self._starts[:drop], self._media[:drop], self._arrival[:drop], self._dbfs[:drop]

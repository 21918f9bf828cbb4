"""Twilio's side of the outbound audio: playout in real time, marks echoed when their audio has played.

    media  queues audio that plays in real time from when the buffer runs dry
    mark   is echoed when the audio queued before it has played (at once if none)
    clear  drops the queued audio and echoes every pending mark at once
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ipc.audio import SAMPLE_RATE, ULAW_SILENCE
from voicecall.sim.script import MarkRecord


class TwilioBuffer:
    """Twilio's outbound playback: audio plays in real time, marks echo at their position."""

    def __init__(self, echo: Callable[[str], Awaitable[None]]) -> None:
        self._echo = echo  # sends the mark back to the server
        self.play_end_ns = 0
        self.segments: list[tuple[int, bytes]] = []  # (start ns, audio); truncated by clear
        self.pending: list[tuple[MarkRecord, asyncio.TimerHandle | None]] = []
        self.marks: list[MarkRecord] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def media(self, audio: bytes, now_ns: int) -> None:
        start = max(now_ns, self.play_end_ns)
        self.segments.append((start, audio))
        self.play_end_ns = start + len(audio) * 1_000_000_000 // SAMPLE_RATE

    def mark(self, name: str, now_ns: int) -> None:
        record = MarkRecord(name, now_ns)
        self.marks.append(record)
        loop = asyncio.get_running_loop()
        delay = max(0, self.play_end_ns - now_ns) / 1e9
        entry: list[Any] = [record, None]
        timer = loop.call_later(delay, self._due, entry) if delay > 0 else None
        self.pending.append((record, timer))
        if timer is None:
            self._due(entry)

    def _due(self, entry: list[Any]) -> None:
        record = entry[0]
        self.pending = [(r, t) for r, t in self.pending if r is not record]
        self._fire(record, dropped=False)

    def clear(self, now_ns: int) -> None:
        kept: list[tuple[int, bytes]] = []
        for start, audio in self.segments:
            if start >= now_ns:
                continue
            played = (now_ns - start) * SAMPLE_RATE // 1_000_000_000
            kept.append((start, audio[:played]))
        self.segments = kept
        self.play_end_ns = now_ns
        pending, self.pending = self.pending, []
        for record, timer in pending:
            if timer is not None:
                timer.cancel()
            self._fire(record, dropped=True)

    def _fire(self, record: MarkRecord, dropped: bool) -> None:
        record.echoed_ns = time.monotonic_ns()
        record.dropped = dropped
        task = asyncio.get_running_loop().create_task(self._echo(record.name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def played(self, start_ns: int, n: int) -> bytes:
        """The `n` samples that played from `start_ns` on (silence where nothing did): what the
        caller's earpiece gave out then, for a line that echoes it."""
        out = bytearray([ULAW_SILENCE]) * n
        end_ns = start_ns + n * 1_000_000_000 // SAMPLE_RATE
        for start, audio in reversed(self.segments):  # the latest first: an echo is of recent audio
            seg_end = start + len(audio) * 1_000_000_000 // SAMPLE_RATE
            if seg_end <= start_ns:
                break  # segments play in order: every earlier one ended before this stretch
            if start >= end_ns:
                continue
            src = max(0, (start_ns - start) * SAMPLE_RATE // 1_000_000_000)
            dst = max(0, (start - start_ns) * SAMPLE_RATE // 1_000_000_000)
            take = min(len(audio) - src, n - dst)
            if take > 0:
                out[dst : dst + take] = audio[src : src + take]
        return bytes(out)

    def heard(self, origin_ns: int) -> bytes:
        """What the caller heard, laid on a timeline from `origin_ns` (gaps are silence)."""
        out = bytearray()
        for start, audio in self.segments:
            at = max(0, (start - origin_ns) * SAMPLE_RATE // 1_000_000_000)
            if at > len(out):
                out.extend(bytes([ULAW_SILENCE]) * (at - len(out)))
            out[at : at + len(audio)] = audio
        return bytes(out)

    def cancel(self) -> None:
        for _, timer in self.pending:
            if timer is not None:
                timer.cancel()
        self.pending = []
        for task in self._tasks:
            task.cancel()

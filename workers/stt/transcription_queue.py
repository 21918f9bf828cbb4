"""Who gets a Whisper decoder next: finals before pause transcripts before partials, oldest first.

Why a queue of its own: one worker serves every call, and a decode cannot be pre-empted once
CTranslate2 runs it. So the order decides latency. A final (a caller is waiting for the agent)
always goes first; a pause transcript (speculative final, also used by the endpointer) next;
partials (captions) last, and only on a spare decoder: they may start only while no other job
waits and while at least one decoder stays free for finals, so a partial never delays a final by
queueing. Each call holds at most one job per kind (a newer request replaces an older one, whose
audio it contains), so a long-winded caller cannot flood the queue and starve the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class JobKind(IntEnum):
    FINAL = 0
    PAUSE = 1
    PARTIAL = 2


@dataclass
class Job:
    """Audio of one call to transcribe and what to do with the text."""

    call_id: int
    kind: JobKind
    #: The call's utterance number when queued (results for an older one are discarded).
    utterance: int
    #: Sample index (8 kHz, call audio) up to which this audio reaches: what the result covers.
    covers: int
    audio: Any  # int16 8 kHz PCM
    #: The call's last voiced VAD window this audio includes (which speech the text accounts for).
    mark: int = -1
    #: A pause's second look (stt.vad.second_look_ms): its text waits for the look's model answer.
    second_look: bool = False
    queued_ns: int = field(default_factory=time.monotonic_ns)


class TranscriptionQueue:
    """A priority queue for `threads` decoder threads (owned and stopped by `close`)."""

    def __init__(self, threads: int, run: Callable[[Job], None], name: str = "stt-decode") -> None:
        self._run = run
        self._cond = threading.Condition()
        self._jobs: dict[tuple[int, JobKind], Job] = {}
        self._running: dict[JobKind, int] = {k: 0 for k in JobKind}
        self._threads_n = max(1, threads)
        self._closed = False
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}") for i in range(self._threads_n)]
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> None:
        """Queue `job`, replacing any queued job of the same call and kind."""
        with self._cond:
            self._jobs[(job.call_id, job.kind)] = job
            self._cond.notify()

    def promote(self, call_id: int) -> bool:
        """Turn a call's queued pause job into a final (a turn now waits for it); False if not queued."""
        with self._cond:
            job = self._jobs.pop((call_id, JobKind.PAUSE), None)
            if job is None:
                return False
            job.kind = JobKind.FINAL
            self._jobs[(call_id, JobKind.FINAL)] = job
            self._cond.notify()
            return True

    def discard(self, call_id: int, kinds: tuple[JobKind, ...] = tuple(JobKind)) -> None:
        """Forget a call's queued (not running) jobs."""
        with self._cond:
            for kind in kinds:
                self._jobs.pop((call_id, kind), None)

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    def busy(self) -> int:
        with self._cond:
            return sum(self._running.values())

    def _next(self) -> Job | None:
        # Called with the lock held: the most urgent kind first, oldest first within it.
        best: Job | None = None
        for job in self._jobs.values():
            if best is None or (job.kind, job.queued_ns) < (best.kind, best.queued_ns):
                best = job
        if best is not None and best.kind == JobKind.PARTIAL:
            spare = self._threads_n - sum(self._running.values()) - 1  # keep one decoder for finals
            if spare < 1:
                return None
        return best

    def _loop(self) -> None:
        while True:
            with self._cond:
                job = self._next()
                while job is None and not self._closed:
                    self._cond.wait(0.5)
                    job = self._next()
                if self._closed:
                    return
                del self._jobs[(job.call_id, job.kind)]
                self._running[job.kind] += 1
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running[job.kind] -= 1
                    self._cond.notify_all()

    def close(self, deadline_s: float) -> bool:
        """Stop the decoder threads (a running decode finishes); True if all stopped in time."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._cond.notify_all()
        end = time.monotonic() + deadline_s
        for t in self._threads:
            t.join(max(end - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in self._threads)

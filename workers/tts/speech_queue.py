"""Which sentence the tts worker speaks next, for many calls at once, and what a cancel stops.

Rules:
- a call's sentences are spoken one at a time, in arrival order (its audio must stay in order);
- the first sentence of a turn nobody has heard yet goes ahead of later sentences of other calls'
  long replies: the key is (turn already started?, arrival);
- `Cancel(call, N)` and any request of a newer turn drop that call's queued sentences of older
  turns and stop the running one at its next synthesis step (`SpeechJob.cancel`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(eq=False)
class SpeechJob:
    """One sentence to speak; `lock` orders its output against a concurrent cancel."""

    call_id: int
    turn_id: int
    seq: int
    text: str
    arrival: int
    received_ns: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    cancelled: bool = False
    _interrupt: Callable[[], None] | None = None

    def cancel(self) -> None:
        """After this returns, nothing more of this sentence is sent (writers check under `lock`)."""
        with self.lock:
            self.cancelled = True
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt()

    def on_cancel(self, interrupt: Callable[[], None] | None) -> None:
        """Register how to abort the running synthesis step (e.g. onnxruntime's terminate flag)."""
        with self.lock:
            self._interrupt = interrupt
            run_now = self.cancelled and interrupt is not None
        if run_now:
            interrupt()  # type: ignore[misc]


@dataclass
class _CallState:
    newest_turn: int = -1
    cancelled_upto: int = -1
    started_turn: int = -1  # newest turn that has begun speaking (its first sentence was taken)


class SpeechQueue:
    """Thread-safe job queue shared by the serve loop (producer) and the synthesis threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: list[SpeechJob] = []
        self._running: dict[int, SpeechJob] = {}  # call_id -> job being spoken
        self._calls: dict[int, _CallState] = {}
        self._arrivals = itertools.count()
        self._stopped = False

    def submit(self, call_id: int, turn_id: int, seq: int, text: str) -> SpeechJob | None:
        """Queue a sentence; None when its turn is already cancelled or superseded."""
        with self._cond:
            if not self._advance(call_id, turn_id):
                return None
            job = SpeechJob(call_id, turn_id, seq, text, next(self._arrivals), time.monotonic_ns())
            self._jobs.append(job)
            self._cond.notify()
            return job

    def cancel(self, call_id: int, turn_id: int) -> None:
        """Stop turn `turn_id` of the call and everything older."""
        with self._cond:
            state = self._calls.setdefault(call_id, _CallState())
            state.cancelled_upto = max(state.cancelled_upto, turn_id)
            state.newest_turn = max(state.newest_turn, turn_id)
            running = self._drop(call_id, lambda job: job.turn_id <= turn_id)
        if running is not None:
            running.cancel()

    def note_turn(self, call_id: int, turn_id: int) -> None:
        """A request of `turn_id` arrived (e.g. context): a newer turn supersedes older ones."""
        with self._cond:
            self._advance(call_id, turn_id)

    def close_call(self, call_id: int) -> None:
        """The call is gone: drop its state, its queued sentences and stop the running one."""
        with self._cond:
            running = self._drop(call_id, lambda job: True)
            self._calls.pop(call_id, None)
        if running is not None:
            running.cancel()

    def take(self, timeout_s: float) -> SpeechJob | None:
        """The next sentence to speak (blocks up to `timeout_s`); None on timeout or stop."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._stopped:
                job = self._best()
                if job is not None:
                    self._jobs.remove(job)
                    self._running[job.call_id] = job
                    state = self._calls.setdefault(job.call_id, _CallState())
                    state.started_turn = max(state.started_turn, job.turn_id)
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return None

    def done(self, job: SpeechJob) -> None:
        """The sentence is finished (or abandoned): the call may speak its next one."""
        with self._cond:
            if self._running.get(job.call_id) is job:
                del self._running[job.call_id]
            self._cond.notify_all()

    def stop(self) -> None:
        """Wake every synthesis thread and stop what runs (worker shutdown)."""
        with self._cond:
            self._stopped = True
            running = list(self._running.values())
            self._jobs.clear()
            self._cond.notify_all()
        for job in running:
            job.cancel()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def busy_calls(self) -> int:
        with self._cond:
            return len({job.call_id for job in self._jobs} | set(self._running))

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    # -- internals, called with the condition held

    def _advance(self, call_id: int, turn_id: int) -> bool:
        state = self._calls.setdefault(call_id, _CallState())
        if turn_id < state.newest_turn or turn_id <= state.cancelled_upto:
            return False
        if turn_id > state.newest_turn:
            state.newest_turn = turn_id
            running = self._drop(call_id, lambda job: job.turn_id < turn_id)
            if running is not None:
                running.cancel()  # only flags and aborts an ORT run: cheap under the condition
        return True

    def _drop(self, call_id: int, match: Callable[[SpeechJob], bool]) -> SpeechJob | None:
        self._jobs = [job for job in self._jobs if job.call_id != call_id or not match(job)]
        running = self._running.get(call_id)
        return running if running is not None and match(running) else None

    def _best(self) -> SpeechJob | None:
        best: SpeechJob | None = None
        best_key: tuple[int, int] | None = None
        for job in self._jobs:
            if job.call_id in self._running:
                continue  # one sentence per call at a time keeps its audio in order
            state = self._calls.get(job.call_id)
            started = state is not None and state.started_turn == job.turn_id
            key = (1 if started else 0, job.arrival)
            if best_key is None or key < best_key:
                best, best_key = job, key
        return best

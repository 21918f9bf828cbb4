"""Smart Turn checks off the serve loop: one thread per `turn_threads`, newest check per call wins.

Why a thread of its own and not the decoder threads: a check (~50-70 ms) and the pause transcript
(~55-90 ms) are both needed before a short end of turn, so they run side by side on the two cores
instead of one after the other. A check superseded by newer speech of the same call is skipped.

A check whose pause is already over when its turn comes is skipped: on a busy machine the thread
would otherwise spend its time on pauses nobody needs an answer for any more.

The check threads run at a lower scheduling priority (`CHECK_NICE`): a turn cannot end early
without the pause transcript, but it can without the model's answer (the transcript rules then
decide alone), so when several callers pause at once on two cores, Whisper's decodes must win the
CPU. On an idle box the nice value costs nothing.

A model that raises at run time does not stop the call: the result is `None` (the endpointer then
uses the transcript rules alone), the first failure is logged with its traceback, the rest counted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workers.stt.smart_turn import SmartTurn

log = logging.getLogger("voicecall.stt")

#: Nice increment of the check threads relative to the decoders (Linux: per thread, by its tid).
CHECK_NICE = 10


@dataclass
class TurnCheck:
    """Is the speech of `call_id`'s `utterance` up to VAD window `mark` a finished turn?"""

    call_id: int
    utterance: int
    mark: int
    audio: np.ndarray  # int16 8 kHz, the last <= 8 s up to the pause
    second_look: bool = False  # a pause judged again (stt.vad.second_look_ms), not its first check


#: Called on the check's thread with (check, P(complete) or None on failure, ms the check took).
ResultFn = Callable[[TurnCheck, "float | None", float], None]


class TurnChecks:
    def __init__(self, model: SmartTurn, threads: int, on_result: ResultFn,
                 is_current: Callable[[TurnCheck], bool] | None = None) -> None:
        self._model = model
        self._on_result = on_result
        #: Asked just before a check runs: False skips it (the caller spoke again meanwhile).
        self._is_current = is_current
        self._cond = threading.Condition()
        self._pending: dict[int, TurnCheck] = {}  # newest per call, in submission order
        self._closed = False
        self.failures = 0
        self.skipped = 0
        self.checks = 0
        self.check_s = 0.0
        self._threads = [threading.Thread(target=self._run, name=f"smart-turn-{i}", daemon=True)
                         for i in range(max(1, threads))]
        for t in self._threads:
            t.start()

    def submit(self, check: TurnCheck) -> None:
        with self._cond:
            self._pending.pop(check.call_id, None)
            self._pending[check.call_id] = check
            self._cond.notify()

    def discard(self, call_id: int) -> None:
        with self._cond:
            self._pending.pop(call_id, None)

    def close(self, deadline_s: float) -> bool:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        end = time.monotonic() + deadline_s
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + CHECK_NICE)
        except (OSError, AttributeError):  # not Linux, or not allowed: checks just compete equally
            pass
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                cid = next(iter(self._pending))
                check = self._pending.pop(cid)
            if self._is_current is not None and not self._is_current(check):
                self.skipped += 1
                continue
            t0 = time.perf_counter()
            prob: float | None
            try:
                prob = self._model.probability_8k(check.audio)
                if not np.isfinite(prob):
                    raise ValueError(f"Smart Turn returned {prob}")
            except Exception:
                prob = None
                self.failures += 1
                if self.failures == 1:
                    log.exception("stt: Smart Turn check failed; turns are ended by the transcript rules alone "
                                  "while it fails (further failures are only counted)")
            ms = (time.perf_counter() - t0) * 1e3
            self.checks += 1
            self.check_s += ms / 1e3
            try:
                self._on_result(check, prob, ms)
            except Exception:  # a bug in the callback must not kill the thread
                log.exception("stt: applying a Smart Turn result failed")

"""No dead air after the caller stops: "One moment." from kept audio when the answer is late.

    the turn ends (the stt worker decides) --- call.wait_filler_after_ms ---> no answer audio yet?
                                                                            say the filler, once
    the stt worker not reading its audio (stopped, dead, behind) for call.stt_stall_ms, and the
    caller quiet for call.wait_filler_quiet_ms after a sound no turn has answered, and no answer
    audible (none, or one held for the turn's end) -> say it too
    a reply due, and the llm or tts worker it waits on not reading its requests for
    call.worker_stall_ms -> say it now, not at wait_filler_after_ms (a stuck worker is known)

A slow or hung worker (the LLM under load, the TTS stopped, the STT stuck) is heard as a short
filler instead of silence, and the answer follows when it comes. The clip is kept in this process
(canned.py), so it plays precisely when the TTS worker is the thing that is stuck. When the stt
worker is not listening there is no turn end to time from, so this process listens for itself:
the loudness of each inbound frame, the cheapest ear there is, used only while stt is stalled.
The filler is not part of any reply: it is never in the history, the records or the latency
stamps (a `wait_filler` event is recorded), and caller speech over it clears it like any audio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from ipc.audio import ULAW_POWER
from voicecall.config import CallConfig

#: A frame louder than this (dBFS, RMS) is the caller making a sound (as sim/script.py's voiced span).
LOUD_DBFS = -40.0
_LOUD_POWER = 10 ** (LOUD_DBFS / 10)  # of full scale
#: A sound older than this is no longer waiting for an answer: a healthy stt worker ends a turn
#: within its longest end-of-turn wait (2.5 s at most), so one it never ended was not speech.
SOUND_MEMORY_NS = 4_000_000_000


def frame_is_loud(mulaw: bytes) -> bool:
    """True when a mu-law frame's RMS level is above `LOUD_DBFS`."""
    return bool(mulaw) and float(ULAW_POWER[np.frombuffer(mulaw, dtype=np.uint8)].mean()) > _LOUD_POWER


class WaitFiller:
    """Per call: says the filler when a caller who has finished has heard nothing for too long."""

    def __init__(self, cfg: CallConfig, say: Callable[[str], None], stt_stalled_ms: Callable[[int], float],
                 reply_stalled_ms: Callable[[int], float], say_for_stt: Callable[[str], None] | None = None) -> None:
        self._cfg = cfg
        self._say = say  # plays the clip for a late reply; the argument says why (the log, the record)
        self._say_for_stt = say_for_stt or say  # ... for a caller waiting on a stalled stt worker
        self._stt_stalled_ms = stt_stalled_ms
        self._reply_stalled_ms = reply_stalled_ms  # the llm and tts workers' longest unread request
        self._timer: asyncio.TimerHandle | None = None
        self._unanswered_sound = False  # the caller made a sound no turn end has covered yet
        self._last_loud_ns = 0

    @property
    def enabled(self) -> bool:
        return bool(self._cfg.wait_filler)

    def reply_started(self, turn_end_ns: int) -> None:
        """A reply to the caller's turn began: its audio is due within `wait_filler_after_ms` of the turn's end.

        Timed from the turn end, not the speech end: after a long end-of-turn wait (a caller
        dictating digits) the answer is not late, and a filler would only delay it."""
        self.cancel()
        self._unanswered_sound = False
        after_ms = self._cfg.wait_filler_after_ms
        if not self.enabled or after_ms <= 0:
            return
        now = time.monotonic_ns()
        start = turn_end_ns if 0 < turn_end_ns <= now else now
        delay_s = max(start + after_ms * 1_000_000 - now, 0) / 1e9
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._late, after_ms)

    def turn_ended(self) -> None:
        """The stt worker ended a turn: the sound so far is in it (answered, or a noise let pass)."""
        self._unanswered_sound = False

    def cancel(self) -> None:
        """The answer's audio started, or the reply is over: no filler for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_frame(self, loud: bool, listening: bool) -> None:
        """An inbound frame, loud or not (`frame_is_loud`); `listening` is True when no answer is
        audible (none in flight, or one held while the caller's words are judged: a speculative
        reply, or an answer paused for a possible backchannel), so the caller may be waiting on a
        turn end only the stt worker can make."""
        if not self.enabled:
            return
        now = time.monotonic_ns()
        if self._timer is not None and self._cfg.worker_stall_ms > 0:
            stalled = self._reply_stalled_ms(now)
            if stalled >= self._cfg.worker_stall_ms:
                self.cancel()
                self._say(f"the reply's worker has not read its requests for {stalled:.0f} ms")
                return
        if self._cfg.stt_stall_ms <= 0:
            return
        if loud:
            self._unanswered_sound = True
            self._last_loud_ns = now
            return
        if not (listening and self._unanswered_sound):
            return
        quiet_ns = now - self._last_loud_ns
        if quiet_ns < self._cfg.wait_filler_quiet_ms * 1_000_000:
            return
        if quiet_ns > SOUND_MEMORY_NS:  # a cough the stt worker rightly let pass, long ago
            self._unanswered_sound = False
            return
        stalled = self._stt_stalled_ms(now)
        if stalled >= self._cfg.stt_stall_ms:
            self._unanswered_sound = False  # once per stretch of sound
            self._say_for_stt(f"the stt worker has not read audio for {stalled:.0f} ms")

    def _late(self, after_ms: int) -> None:
        self._timer = None
        self._say(f"no answer audio {after_ms} ms after the turn ended")

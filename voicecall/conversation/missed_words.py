"""Words lost with an STT worker: ask the caller to repeat instead of answering a fragment.

    caller talking (SpeechStarted, no TurnEnded yet) --stt restarting--> LOST
    LOST --stt ready--> wait `grace_s` for the new worker to hear speech in the backlog
         +-- SpeechStarted within it: the rest of the utterance --> its TurnEnded is a FRAGMENT:
         |                                                          swallowed, then "say it again"
         +-- nothing: the caller had finished ----------------------> "say it again" at once

The dead worker took the beginning of the utterance with it; its successor hears only the rest,
and answering that would answer a question nobody asked. A person would say they missed it.

A caller who had only just begun (no SpeechStarted yet: it needs `min_speech_ms`) is caught by
the media clock instead: the first utterance the new worker ends, if it began before the moment
the old one was lost, is a fragment too.

A caller who began while no worker listened (the ~1 s restart) has no SpeechStarted at all, so
telephony's own ear (wait_filler.frame_is_loud, per frame) counts the sound the new worker will
never hear: `UNHEARD_SPEECH_MS` of it makes the loss LOST at `stt ready`, as above.

A stalled worker (stopped, not dead) loses words too when its request ring fills and audio is
dropped: the same count of loud dropped frames, the same grace once frames flow again, and an
utterance begun before the gap closed is a fragment. "Say it again" waits for the caller to be
quiet (`QUIET_MS`), never over their words.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable

#: This much caller sound while no stt worker listened is words lost, not a click or a cough
#: (a little above the 160 ms of speech the stt worker needs to call it speech; frames are 20 ms).
UNHEARD_SPEECH_MS = 240
#: The caller must have been quiet this long before "say it again" is said (else: wait on).
QUIET_MS = 300
_FRAME_MS = 20
_MAX_WAIT_S = 5.0  # a caller who talks on longer than this after the grace is asked anyway


class _Phase(enum.Enum):
    IDLE = "idle"
    LOST = "lost"  # the worker died while the caller was talking
    GRACE = "grace"  # a new worker serves; is the caller still talking?
    FRAGMENT = "fragment"  # yes: the next TurnEnded is the rest of a lost utterance


class MissedWords:
    """Per call: knows whether the caller was mid-utterance when the stt worker went away."""

    def __init__(self, ask_again: Callable[[str], None], grace_s: float = 0.8) -> None:
        self._ask_again = ask_again
        self._grace_s = grace_s
        self._speaking = False
        self._phase = _Phase.IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._lost_at_ms: int | None = None  # media time of the last frame sent when the worker was lost
        self._away = False  # between the worker's loss and its successor's ready
        self._unheard_ms = 0  # caller sound while away, or dropped on a full ring: nobody transcribed it
        self._dropping = False  # frames are being dropped (the worker's request ring is full)
        self._last_dropped_ms = -1
        self._quiet_ms = QUIET_MS  # how long the caller has been quiet, by inbound frames (no sound yet: quiet)
        self._give_up_at = 0.0  # monotonic s: past it, ask even over a caller still talking
        self.asked = 0

    def on_frame(self, loud: bool) -> None:
        """An inbound frame, loud or not; counted as unheard while no stt worker listens."""
        self._quiet_ms = 0 if loud else self._quiet_ms + _FRAME_MS
        if loud and self._away:
            self._unheard_ms += _FRAME_MS

    def on_dropped(self, loud: bool, media_ms: int) -> None:
        """A frame the stt worker will never see: its request ring was full (the worker stalled)."""
        if self._away:
            return  # counted by on_frame already
        self._dropping = True
        self._last_dropped_ms = media_ms
        if loud:
            self._unheard_ms += _FRAME_MS

    def on_sent(self) -> None:
        """A frame reached the stt worker's ring: a stretch of drops, if any, is over."""
        if not self._dropping:
            return
        self._dropping = False
        unheard, self._unheard_ms = self._unheard_ms, 0
        if unheard < UNHEARD_SPEECH_MS or self._phase is not _Phase.IDLE:
            return
        # An utterance begun before the gap closed was heard with a hole in it (or not at all).
        self._lost_at_ms = self._last_dropped_ms
        self._phase = _Phase.LOST
        self._start_grace()

    def speech_started(self) -> None:
        self._speaking = True
        if self._phase is _Phase.GRACE:
            self._cancel_timer()
            self._phase = _Phase.FRAGMENT

    def turn_ended(self, speech_start_media_ms: int = -1) -> bool:
        """True when this TurnEnded is the rest of a lost utterance: ask again instead of answering."""
        self._speaking = False
        lost_at, self._lost_at_ms = self._lost_at_ms, None  # only the first utterance after a loss
        if self._phase is _Phase.FRAGMENT:
            self._phase = _Phase.IDLE
            return True
        # Started before the old worker was lost (+ one VAD window of slack): that one heard its beginning.
        fragment = lost_at is not None and 0 <= speech_start_media_ms <= lost_at + 100
        if fragment and self._phase is _Phase.GRACE:  # the session asks, with this turn: not the grace too
            self._cancel_timer()
            self._phase = _Phase.IDLE
        return fragment

    def stt_restarting(self, media_ms: int = -1) -> None:
        if self._speaking and self._phase is _Phase.IDLE:
            self._phase = _Phase.LOST
        if not self._away:  # the first word of the loss (dead, then restarting) dates it
            self._lost_at_ms = media_ms if media_ms >= 0 else None
        self._away = True
        self._speaking = False  # the new worker starts with no utterance open

    def stt_ready(self) -> None:
        unheard, self._unheard_ms, self._away = self._unheard_ms, 0, False
        if self._phase is _Phase.IDLE and unheard >= UNHEARD_SPEECH_MS:
            self._phase = _Phase.LOST  # spoken while nobody listened
        if self._phase is not _Phase.LOST:
            return
        self._start_grace()

    def _start_grace(self) -> None:
        self._phase = _Phase.GRACE
        self._give_up_at = time.monotonic() + self._grace_s + _MAX_WAIT_S
        self._timer = asyncio.get_running_loop().call_later(self._grace_s, self._grace_over)

    def _grace_over(self) -> None:
        self._timer = None
        if self._phase is not _Phase.GRACE:
            return
        if self._quiet_ms < QUIET_MS and time.monotonic() < self._give_up_at:  # the caller is talking: not over them
            self._timer = asyncio.get_running_loop().call_later(0.1, self._grace_over)
            return
        self._phase = _Phase.IDLE
        self._ask("the stt worker lost the caller's words (restarted or fell behind)")

    def _ask(self, why: str) -> None:
        self.asked += 1
        self._ask_again(why)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel_timer()
        self._phase = _Phase.IDLE
        self._away = self._dropping = False

"""Audio synthesized once per TTS incarnation and kept: the greeting, the apology, "say it again",
"one moment".

The greeting is the same for every call, so it is synthesized when the TTS worker becomes ready
and played the instant a stream starts. The apology must be playable precisely when the TTS
worker is the thing that failed, so it too is kept as mulaw in the telephony process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ipc.messages import SentenceDone, Synthesize, TtsEvent
from ipc.ring import Record

log = logging.getLogger("voicecall.telephony")

#: call_id reserved for process-level synthesis (real calls count from `incarnation_base() + 1`)
CANNED_CALL_ID = 0


def incarnation_base(now_s: float | None = None) -> int:
    """Where this telephony incarnation's call ids (and canned-audio turn ids) start.

    The workers outlive telephony and keep per-call state (turn counters, audio) until they
    hear `CallClosed`, which a killed telephony never sends; a restarted one that counted from
    the same place again would meet that stale state: its requests would look like old turns
    and be dropped. So ids start at 10,000 per second of the wall clock (a restart takes longer
    than a second, and nothing opens 10,000 calls a second), wrapping after ~28 h so they stay
    below the rings' u32 `call_id`/`turn_id`.
    """
    seconds = int(time.time() if now_s is None else now_s) % 100_000
    return seconds * 10_000


@dataclass
class CannedClip:
    text: str
    audio: bytearray = field(default_factory=bytearray)
    ready: bool = False


class CannedAudio:
    """Greeting and apology as mulaw, filled from the TTS worker's output for call 0."""

    def __init__(self, greeting: str, apology: str, missed_words: str = "Sorry, I missed that, could you say it again?",
                 more_greetings: tuple[str, ...] = (), wait_filler: str = "") -> None:
        self.clips = {1: CannedClip(greeting), 2: CannedClip(apology), 3: CannedClip(missed_words),
                      4: CannedClip(wait_filler)}
        kept = (greeting, apology, missed_words, wait_filler)
        for text in dict.fromkeys(t for t in more_greetings if t and t not in kept):
            self.clips[len(self.clips) + 1] = CannedClip(text)  # agent profiles' own greetings
        self._generation = incarnation_base()  # the TTS worker may remember an earlier telephony's turns

    def clip_for(self, text: str) -> CannedClip | None:
        """The kept clip of a greeting (any agent's), None if `text` is not one."""
        return next((c for seq, c in self.clips.items() if seq not in (2, 3, 4) and c.text == text), None)

    @property
    def greeting(self) -> CannedClip:
        return self.clips[1]

    @property
    def apology(self) -> CannedClip:
        return self.clips[2]

    @property
    def missed_words(self) -> CannedClip:
        return self.clips[3]

    @property
    def wait_filler(self) -> CannedClip:
        """ "One moment.": said while an answer is late (voicecall/conversation/wait_filler.py)."""
        return self.clips[4]

    def requests(self) -> list[Synthesize]:
        """What to ask the TTS worker for (again after each of its restarts)."""
        self._generation += 1
        for clip in self.clips.values():
            clip.audio.clear()
            clip.ready = False
        return [
            Synthesize(call_id=CANNED_CALL_ID, turn_id=self._generation, seq=seq, text=clip.text)
            for seq, clip in self.clips.items() if clip.text
        ]

    def on_record(self, rec: Record, msg: TtsEvent | None) -> None:
        if rec.turn_id != self._generation:
            return
        clip = self.clips.get(rec.seq)
        if clip is None:
            return
        if msg is None:
            clip.audio += rec.payload
        elif isinstance(msg, SentenceDone):
            clip.ready = True
            log.info("canned audio ready: %r (%d ms)", clip.text[:40], msg.duration_ms)

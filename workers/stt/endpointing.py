"""When a caller's speech starts and when their turn ends, from Silero probabilities and the transcript.

Pure logic (no model, no clock): fed one speech probability per 32 ms VAD window, it says

    silent --(voiced for min_speech_ms)--> speaking      => Onset   (the barge-in trigger)
    speaking --(settle_ms of silence)-->   pausing       => Pause   (transcribe what was said so far)
    pausing --(voiced again)-->            speaking      => Resume
    pausing --(enough silence)-->          silent        => End     (the turn is over)

"Enough silence" adapts to what was said (`required_silence_ms`): a transcript that ends a sentence
or a question ends the turn after `silence_ms`; one that trails off mid-clause (a conjunction, an
article, a comma, an ellipsis) or ends in digits (a phone number being dictated) waits
`silence_ms_incomplete`; anything else `silence_ms_neutral`. While the transcript of the speech
before the pause is not known yet, the turn does not end before `silence_ms_incomplete` unless
the transcript arrives and allows it: a caller is never cut off because Whisper was busy.

Hysteresis as in Silero's own segmenter: a window counts as voiced at `threshold`, and speech
continues while the probability stays above `threshold - 0.15`.
"""

from __future__ import annotations

import re
from enum import Enum

from workers.config import VadConfig

#: Words after which an English sentence is almost never finished.
TRAILING_WORDS = frozenset(
    "a an the and or but so because if that which who whose whom to of for with at in on from by about "
    "my your his her our their its is are was were be been am i we you they he she it um uh like than "
    "then when where while as into onto plus minus".split()
)
_NUMBER_WORDS = frozenset("zero oh one two three four five six seven eight nine ten hundred thousand".split())
_WORD = re.compile(r"[a-z0-9']+")


class Completeness(Enum):
    COMPLETE = "complete"
    NEUTRAL = "neutral"
    INCOMPLETE = "incomplete"


def completeness(text: str) -> Completeness:
    """Does `text` sound finished? Decides how much silence ends the turn."""
    stripped = text.strip()
    if not stripped:
        return Completeness.NEUTRAL
    words = _WORD.findall(stripped.lower())
    last = words[-1] if words else ""
    if any(ch.isdigit() for ch in last) or last in _NUMBER_WORDS:
        return Completeness.INCOMPLETE  # digits may be part of a number still being dictated
    if stripped.endswith(("...", "…", ",", "-", ";", ":")) or last in TRAILING_WORDS:
        return Completeness.INCOMPLETE
    if stripped.endswith("?") or (stripped.endswith((".", "!")) and len(words) > 2):
        return Completeness.COMPLETE
    # Whisper ends any fragment it is given with "." ("Sorry." for "Sorry, could you..."): a one- or
    # two-word "sentence" is as often a preamble as an answer, so it gets the neutral wait.
    return Completeness.NEUTRAL


def required_silence_ms(cfg: VadConfig, text: str | None) -> int:
    """Silence that ends the turn after `text` (None: transcript not known yet)."""
    if text is None:
        return cfg.silence_ms_incomplete
    return {
        Completeness.COMPLETE: cfg.silence_ms,
        Completeness.NEUTRAL: cfg.silence_ms_neutral,
        Completeness.INCOMPLETE: cfg.silence_ms_incomplete,
    }[completeness(text)]


class Event(Enum):
    ONSET = "onset"
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"


class Endpointer:
    """One call's turn-taking state, advanced one VAD window at a time.

    Window k spans [k * window_ms, (k + 1) * window_ms) of the call's audio. `onset_window` is the
    first voiced window of the speech, `last_voiced` the last one so far.
    """

    def __init__(self, policy: VadConfig, window_ms: int = 32) -> None:
        self.policy = policy
        self.window_ms = window_ms
        self.speaking = False
        self.paused = False
        self.run_start = -1  # first window of the current voiced run while silent
        self.onset_window = -1
        self.last_voiced = -1
        #: End of speech in ms of call audio: the last voiced window's end, or earlier once the
        #: worker refines it by energy (Silero's probability lingers ~60-100 ms after the voice).
        self.speech_end_ms = 0
        #: Transcript of everything up to `last_voiced` (set by the worker), or None while unknown.
        self.text: str | None = None
        self.required_ms = policy.silence_ms_incomplete
        #: Override of min_speech_ms / threshold while the agent is audible (echo), or None.
        self.strict: tuple[float, int] | None = None

    def _threshold_and_min(self) -> tuple[float, int]:
        if self.strict is not None:
            return self.strict
        return self.policy.threshold, self.policy.min_speech_ms

    def silence_ms(self, window: int) -> int:
        """Silence since the end of speech, at the end of `window`."""
        return (window + 1) * self.window_ms - self.speech_end_ms

    def refine_end(self, end_ms: int) -> None:
        """Move the end of speech earlier (never later than the last voiced window's end)."""
        self.speech_end_ms = min(max(end_ms, self.onset_window * self.window_ms),
                                 (self.last_voiced + 1) * self.window_ms)

    def set_text(self, text: str | None) -> None:
        """The transcript of the speech so far (None when new speech made the last one stale)."""
        self.text = text
        self.required_ms = required_silence_ms(self.policy, text)

    def step(self, window: int, prob: float) -> Event | None:
        """Advance by one window; return what happened, if anything."""
        threshold, min_speech_ms = self._threshold_and_min()
        if not self.speaking:
            if prob >= threshold:
                if self.run_start < 0:
                    self.run_start = window
                if (window - self.run_start + 1) * self.window_ms >= min_speech_ms:
                    self.speaking, self.paused = True, False
                    self.onset_window, self.last_voiced = self.run_start, window
                    self.speech_end_ms = (window + 1) * self.window_ms
                    self.set_text(None)
                    return Event.ONSET
            elif prob < threshold - 0.15:
                self.run_start = -1
            return None
        if prob >= threshold or (prob >= threshold - 0.15 and not self.paused):
            self.last_voiced = window
            self.speech_end_ms = (window + 1) * self.window_ms
            if self.paused:
                self.paused = False
                self.set_text(None)
                return Event.RESUME
            return None
        if not self.paused:
            if (window - self.last_voiced) * self.window_ms >= self.policy.settle_ms:
                self.paused = True
                return Event.PAUSE
            return None
        if self.silence_ms(window) >= self.required_ms:
            return self._end()
        return None

    def check(self, window: int) -> Event | None:
        """Re-check the end rule after the transcript changed (no new window needed)."""
        if self.speaking and self.paused and self.silence_ms(window) >= self.required_ms:
            return self._end()
        return None

    def _end(self) -> Event:
        self.speaking = self.paused = False
        self.run_start = -1
        return Event.END

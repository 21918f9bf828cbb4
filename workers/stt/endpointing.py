"""When a caller's speech starts and when their turn ends, from Silero probabilities and the transcript.

Pure logic (no model, no clock): fed one speech probability per 32 ms VAD window, it says

    silent --(voiced for min_speech_ms)--> speaking      => Onset   (the barge-in trigger)
    speaking --(settle_ms of silence)-->   pausing       => Pause   (transcribe what was said so far)
    pausing --(voiced again)-->            speaking      => Resume
    pausing --(enough silence)-->          silent        => End     (the turn is over)

"Enough silence" adapts to what was said and how it sounded (`required_silence_ms`), from two
signals known shortly after each pause: the transcript of the speech so far (does it trail off: a
conjunction, an article, a comma, an ellipsis, "um", digits of a number or the day of a date being
dictated, an "if" with no verb yet, an "I'll" with none?) and the
Smart Turn model's P(turn complete) from the sound of the last 8 s (workers/stt/smart_turn.py):

    text / model        P >= complete_prob    in between            P < incomplete_prob   off / failed
    finished sentence    silence_ms_confident  silence_ms            silence_ms_incomplete silence_ms
     ... a question      silence_ms_confident  silence_ms_question   s..._question_disputed silence_ms
    no clear ending      silence_ms            silence_ms_neutral    silence_ms_incomplete silence_ms_neutral
     ... 3+ bare words   silence_ms            s..._unpunctuated     silence_ms_incomplete silence_ms_neutral
    trails off           silence_ms_incomplete silence_ms_incomplete silence_ms_max        silence_ms_incomplete

The model is a signal, not a verdict: on phone audio it misses some complete questions and
believes some half sentences, so it shortens the wait only when the text agrees, and lengthens it
on its own only when it is sure. While the transcript is not known yet, the turn does not end
before `silence_ms_incomplete`: a caller is never cut off because a decoder was busy. While the
model has not answered, the transcript rules decide alone (a loaded machine makes a check take
300+ ms; it then costs the fast path, never more than the rules' own wait). A pause still waiting
`second_look_ms` into it (once the first look's answers are in, and not a closed sentence with a
short wait: `wants_second_look`) is judged again on the audio up to then (`take_second_look`):
with ~300 ms of silence heard, Whisper hears the end of the last word ("...speak with" becomes
"...speak with?", "...a checkup" becomes "...a checkup for") and the model is surer either way.
The new transcript replaces the first (unless it only closed what the first heard trail off:
`second_look_reading`); the model's new answer counts only where Whisper closed
the sentence (`second_look_prob`): given that much silence the model leans to "complete" on a
clause cut at a pause too. While that look is out the turn does not end (`hold_ms`, at most
`second_look_wait_ms` past it): its answer may make the wait longer. A caller who talks for
`max_run_ms` without a single pause has their turn ended anyway (an open line or a monologue must
not hold the call forever).

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
    "then when where while as into onto plus minus "
    # prepositions a sentence does not end on either ("My appointment is under | my husband's name")
    "under until during between without within toward towards via per".split()
)
#: A contracted auxiliary cannot end an English clause ("Yes, I will", never "Yes, I'll"): a transcript
#: ending on one ("I was going to ask if I'll") is a caller who paused before the verb. "'s" only after
#: a pronoun or wh-word: after a noun it is a possessive, which can end one ("Is this John's?").
_CONTRACTED = ("'ll", "'d", "'ve", "'re", "'m")
_CONTRACTED_S = frozenset("it's that's what's he's she's there's here's who's where's how's when's".split())
#: Words a caller dictating a number or a date pauses after ("five five five, ...", "March, the fourth").
_MONTHS = frozenset("january february march april may june july august september october november december".split())
_NUMBER_WORDS = frozenset("zero oh one two three four five six seven eight nine ten hundred thousand".split()) | _MONTHS
#: Trailing words that also end real questions ("Is there a bus near you?", "Do you take walk-ins?"
#: heard as "walk in?", "Is the doctor in?"): with a "?" after them and four words or more the
#: question is judged by its punctuation. With a "." they still trail: tiny.en writes "...for it."
#: for a caller who paused after "for".
_QUESTION_ENDINGS = frozenset("you it in on".split())
#: Prepositions a wh-question strands at its end ("Who should I talk to?", "What is it for?"). A
#: yes/no question does not ("Can I reschedule to?" is a caller who paused), so only questions that
#: open with one of _WH_WORDS, or hold a clause of their own (`_has_relative`), are judged by their "?".
_STRANDED = frozenset("to for with about from at of".split())
_WH_WORDS = frozenset("who whom whose what which where when why how".split())
_SUBJECTS = frozenset("i we you they he she".split())
_NOT_BEFORE_RELATIVE = frozenset(
    "if whether because that when so and but or then while since until before after as "
    "can could would will should shall may might must do does did is are was were am have has had".split()
)
#: Ordinals that name a day of a date being dictated ("March the fourth, nineteen eighty").
_ORDINALS = frozenset(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth".split()
)
_BEFORE_DAY = frozenset("the of twenty thirty".split()) | _MONTHS
#: Clauses that need a verb: "Could you tell me if the doctor?" is a caller who paused.
_SUBORDINATORS = frozenset("if whether because".split())
_DETERMINERS = frozenset("the a an my your our their his her this that these those".split())
#: What a sentence-final "end" follows when it is the word: a determiner or a modifier of the noun
#: ("the end", "on my end", "a dead end", "the week end"), or a subject or auxiliary of the verb ("it will
#: end", "make it end"). After anything else ("The pain started on Tuesday end.", live, Piper at 0.85)
#: it is an "and" drawn out before a pause, which tiny.en writes as "end".
_BEFORE_END = _DETERMINERS | _SUBJECTS | frozenset(
    "it its them to will would can could should might must shall may not never no any each either one "
    "other same very dead deep front back tail loose far week rear top bottom low high bitter wrong happy".split()
)
WORD = re.compile(r"[a-z0-9']+")


#: Marks Whisper ends a transcript with when the voice trails off.
_TRAIL_MARKS = ("...", "…", ",", "-", ";", ":")


class Completeness(Enum):
    COMPLETE = "complete"
    NEUTRAL = "neutral"
    INCOMPLETE = "incomplete"


def _stripped(text: str) -> str:
    """The transcript without surrounding space and closing quotes or brackets: its last mark shows."""
    return text.strip().rstrip("\"')")


def completeness(text: str) -> Completeness:
    """Does `text` sound finished? Decides how much silence ends the turn."""
    stripped = _stripped(text)
    if not stripped:
        return Completeness.NEUTRAL
    words = WORD.findall(stripped.lower())
    last = words[-1] if words else ""
    question = stripped.endswith("?")
    if any(ch.isdigit() for ch in last) or last in _NUMBER_WORDS:
        return Completeness.INCOMPLETE  # digits (or a month) may be part of a number or date being dictated
    if last in _ORDINALS and not question and len(words) > 1 and words[-2] in _BEFORE_DAY:
        return Completeness.INCOMPLETE  # "the fourth," of a date; "Are you open on the fourth?" asks
    if stripped.endswith(_TRAIL_MARKS):
        return Completeness.INCOMPLETE
    if last in TRAILING_WORDS and not _ends_question(stripped, words) and words[-2:] != ["thank", "you"]:
        return Completeness.INCOMPLETE
    if last == "end" and not question and len(words) > 1 and words[-2] not in _BEFORE_END:
        return Completeness.INCOMPLETE  # "...on Tuesday end." is "...on Tuesday and"
    if _open_clause(words):
        return Completeness.INCOMPLETE
    if last.endswith(_CONTRACTED) or last in _CONTRACTED_S:
        return Completeness.INCOMPLETE
    if question or (stripped.endswith((".", "!")) and len(words) > 2):
        return Completeness.COMPLETE
    # Whisper ends any fragment it is given with "." ("Sorry." for "Sorry, could you..."): a one- or
    # two-word "sentence" is as often a preamble as an answer, so it gets the neutral wait. So do
    # bare words: a clause cut at a pause ("I'd like to book a checkup" for "...a checkup for | my
    # daughter"), but as often, live, a finished question tiny.en left bare ("is the clinic open at
    # lunch time", 5 turns of one espeak call; Piper's never), so they do not wait 1.2 s.
    return Completeness.NEUTRAL


def _ends_question(stripped: str, words: list[str]) -> bool:
    """A "?" after a word that usually trails, where it ends a real question instead."""
    if not stripped.endswith("?"):
        return False
    if words[-1] == "that" and len(words) >= 2:
        return True  # a pronoun there: "What's that?", "Is there a fee for that?"
    if len(words) < 4:
        return False
    if words[-1] in _QUESTION_ENDINGS:
        return True
    clause = WORD.findall(re.split(r"[.,;:!]", stripped)[-1].lower())  # "Okay, who do I talk to?"
    return words[-1] in _STRANDED and len(clause) >= 4 and (clause[0] in _WH_WORDS or _has_relative(clause))


def _has_relative(clause: list[str]) -> bool:
    """A clause inside the question whose preposition is the one stranded: a subject after a noun or
    a wh-word ("Is there someone I can talk to?", "Do you know who I should speak with?"), not
    the question's own subject after its auxiliary ("So can I talk to?") or an "if" ("...if I can go to?")."""
    return any(clause[i] in _SUBJECTS and clause[i - 1] not in _NOT_BEFORE_RELATIVE for i in range(2, len(clause) - 1))


def _open_clause(words: list[str]) -> bool:
    """An "if"/"whether"/"because" followed by a noun phrase and no verb yet ("...if the doctor")."""
    for i in range(len(words) - 1, max(len(words) - 4, -1), -1):
        if words[i] in _SUBORDINATORS:
            rest = words[i + 1:]
            return 1 <= len(rest) <= 2 and rest[0] in _DETERMINERS
    return False


def required_silence_ms(cfg: VadConfig, text: str | None, turn_prob: float | None = None) -> int:
    """Silence that ends the turn after `text` (None: not known yet) given the model's P(complete)
    (`turn_prob` None: the model is off, failed, or has not answered yet; the transcript rules
    alone decide until it answers, so a slow model never makes the wait longer than they would)."""
    if text is None:
        return cfg.silence_ms_incomplete
    said = completeness(text)
    if turn_prob is None:
        return {
            Completeness.COMPLETE: cfg.silence_ms,
            Completeness.NEUTRAL: cfg.silence_ms_neutral,
            Completeness.INCOMPLETE: cfg.silence_ms_incomplete,
        }[said]
    sure_done = turn_prob >= cfg.turn_complete_prob
    sure_not = turn_prob < cfg.turn_incomplete_prob
    if said is Completeness.INCOMPLETE:
        return cfg.silence_ms_max if sure_not else cfg.silence_ms_incomplete
    if sure_not:
        # a "?" disputes the model more than a "." (which Whisper puts on any fragment): a middle wait
        question = said is Completeness.COMPLETE and _stripped(text).endswith("?")
        return cfg.silence_ms_question_disputed if question else cfg.silence_ms_incomplete
    if said is Completeness.COMPLETE:
        if sure_done:
            return cfg.silence_ms_confident
        return cfg.silence_ms_question if _stripped(text).endswith("?") else cfg.silence_ms
    if sure_done:
        return cfg.silence_ms
    return cfg.silence_ms_unpunctuated if unpunctuated(text) else cfg.silence_ms_neutral


def second_look_prob(text: str, prob: float | None, first_prob: float | None) -> float | None:
    """The model's answer that counts after the second look at a pause: the new `prob` (None: the
    check failed) when the new transcript `text` ends with a closing mark, else the first one's.
    Offline (five caller sets and voices, 84 pauses, 80 complete questions) this talked over no
    pause more and ended 5 of the 9 long waits after complete questions; the new P alone talked
    over one more pause in each of two sets (and one fewer in a third)."""
    if prob is not None and closed(text):
        return prob
    return first_prob


def second_look_reading(first_text: str | None, first_prob: float | None, text: str,
                        prob: float | None) -> tuple[str, float | None]:
    """The transcript and model answer the end rule weighs after the second look: the look's
    (`second_look_prob`), unless it only closed with a "." what the first heard trail off (the
    same words, "..." or "," before): the silence since made Whisper close it, not the caller
    ("...but I am too..." then "...but I am too." at P 0.08, offline through the telephone band:
    talked over at 400 ms). The first reading then stands."""
    if first_text is not None and _stripped(first_text).endswith(_TRAIL_MARKS):
        now = _stripped(text)
        if now.endswith(".") and not now.endswith(_TRAIL_MARKS) \
                and WORD.findall(now.lower()) == WORD.findall(_stripped(first_text).lower()):
            return first_text, first_prob
    return text, second_look_prob(text, prob, first_prob)


def wants_second_look(cfg: VadConfig, text: str, required_ms: int) -> bool:
    """Is a second look worth its decode and check for a pause still waiting `required_ms` after
    `text` (the first look's)? Not for a closed sentence whose wait is `silence_ms` or less: its
    reply is being prepared already, and on a CPU box the look competes with it (the Piper
    question set's voice-to-voice p95 rose 462 -> 524 ms with every such pause looked at, for no
    talk-over it would have saved on the report set)."""
    return bool(cfg.second_look_ms) and not (closed(text) and required_ms <= cfg.silence_ms)


def closed(text: str) -> bool:
    """The transcript ends with a closing mark: Whisper heard a finished sentence or question."""
    return _stripped(text).endswith((".", "!", "?"))


def unpunctuated(text: str) -> bool:
    """Three words or more and no closing punctuation: Whisper closes what sounded finished and
    leaves bare a clause cut at a pause ("I'd like to book a checkup" | "for my daughter")."""
    return not closed(text) and len(WORD.findall(_stripped(text).lower())) >= 3


class Event(Enum):
    ONSET = "onset"
    PAUSE = "pause"
    RESUME = "resume"
    END = "end"


class OnsetCounter:
    """Silent -> speaking: voiced windows counted toward `min_speech_ms`; a dip below the threshold
    of at most `gap_ms` is bridged (its windows not counted), a longer one starts the count again.
    Once counting, a window counts as voiced down to `threshold - 0.15` (Silero's hysteresis)."""

    def __init__(self, gap_ms: int, window_ms: int = 32) -> None:
        self.gap_ms = gap_ms
        self.window_ms = window_ms
        self.run_start = -1  # first voiced window of the run being counted, -1 when none
        self.voiced = 0
        self.gap = 0

    def reset(self) -> None:
        self.run_start = -1

    def step(self, window: int, prob: float, threshold: float, min_speech_ms: int) -> bool:
        """Count one window; True when the run reached `min_speech_ms` (it began at `run_start`)."""
        voiced = prob >= threshold or (self.run_start >= 0 and prob >= threshold - 0.15)
        if not voiced:
            if self.run_start >= 0:
                self.gap += 1
                if self.gap * self.window_ms > self.gap_ms:
                    self.run_start = -1
            return False
        if self.run_start < 0:
            self.run_start, self.voiced = window, 0
        self.voiced += 1
        self.gap = 0
        return self.voiced * self.window_ms >= min_speech_ms


class Endpointer:
    """One call's turn-taking state, advanced one VAD window at a time.

    Window k spans [k * window_ms, (k + 1) * window_ms) of the call's audio. `onset_window` is the
    first voiced window of the speech, `last_voiced` the last one so far.
    """

    def __init__(self, policy: VadConfig, window_ms: int = 32, max_run_ms: int = 0) -> None:
        self.policy = policy
        self.window_ms = window_ms
        #: Voiced time (ms) without any pause after which the turn ends anyway; 0 = never.
        self.max_run_ms = max_run_ms
        self.run_begin = -1  # first window of the voiced run since the onset or the last resume
        self.speaking = False
        self.paused = False
        self.onset = OnsetCounter(policy.onset_gap_ms, window_ms)  # while silent: is speech starting?
        self.onset_window = -1
        self.last_voiced = -1
        #: End of speech in ms of call audio: the last voiced window's end, or earlier once the
        #: worker refines it by energy (Silero's probability lingers ~60-100 ms after the voice).
        self.speech_end_ms = 0
        #: Transcript of everything up to `last_voiced` (set by the worker), or None while unknown.
        self.text: str | None = None
        #: Smart Turn's P(complete) for the speech up to `last_voiced`, None when off/failed/not known.
        self.turn_prob: float | None = None
        #: Ended by `max_run_ms` rather than by silence (the worker reports it).
        self.forced = False
        self.required_ms = policy.silence_ms_incomplete
        #: Silence (ms) the turn may not end before whatever `required_ms` says: set while a second
        #: look at this pause is out (its answer may lengthen the wait), 0 otherwise.
        self.hold_ms = 0
        #: Override of min_speech_ms / threshold while the agent is audible (echo), or None.
        self.strict: tuple[float, int] | None = None

    def onset_rule(self) -> tuple[float, int]:
        """(threshold, min_speech_ms) that start speech now: stricter while the agent is audible."""
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
        self._update()

    def set_turn_prob(self, prob: float | None) -> None:
        """The model's answer for the speech so far (None: it failed; the rules decide alone)."""
        self.turn_prob = prob
        self._update()

    def expect_turn_prob(self) -> None:
        """A model check for the speech so far was asked for: the old answer no longer applies."""
        self.turn_prob = None
        self._update()

    def take_second_look(self, text: str, prob: float | None) -> None:
        """The speech so far judged again later in the pause (`second_look_ms`): its transcript
        replaces the first, and the model's answer counts, as `second_look_reading` says."""
        text, self.turn_prob = second_look_reading(self.text, self.turn_prob, text, prob)
        self.set_text(text)

    def _update(self) -> None:
        self.required_ms = required_silence_ms(self.policy, self.text, self.turn_prob)

    def step(self, window: int, prob: float) -> Event | None:
        """Advance by one window; return what happened, if anything."""
        threshold, min_speech_ms = self.onset_rule()
        if not self.speaking:
            if self.onset.step(window, prob, threshold, min_speech_ms):
                return self.start_at(self.onset.run_start, window)
            return None
        if prob >= threshold or (prob >= threshold - 0.15 and not self.paused):
            self.last_voiced = window
            self.speech_end_ms = (window + 1) * self.window_ms
            if self.paused:
                self.paused = False
                self.run_begin = window
                self.turn_prob, self.hold_ms = None, 0
                self.set_text(None)
                return Event.RESUME
            if self.max_run_ms and (window - self.run_begin + 1) * self.window_ms >= self.max_run_ms:
                self.forced = True
                return self._end()
            return None
        if not self.paused:
            if (window - self.last_voiced) * self.window_ms >= self.policy.settle_ms:
                self.paused = True
                return Event.PAUSE
            return None
        if self._due(window):
            return self._end()
        return None

    def _due(self, window: int) -> bool:
        return self.silence_ms(window) >= max(self.required_ms, self.hold_ms)

    def start_at(self, onset_window: int, window: int) -> Event:
        """Speech began at `onset_window`, found by the time `window` was counted (by this endpointer's
        own counter, or another VAD phase's: workers/stt/vad.py HalfWindowStream)."""
        self.speaking, self.paused, self.forced = True, False, False
        self.onset.reset()
        self.onset_window, self.last_voiced = onset_window, max(window, onset_window)
        self.run_begin = onset_window
        self.turn_prob, self.hold_ms = None, 0
        self.speech_end_ms = (self.last_voiced + 1) * self.window_ms
        self.set_text(None)
        return Event.ONSET

    def withdraw_onset(self) -> None:
        """The speech `start_at` began was not the caller's (their line echoing the agent): silent again."""
        self.speaking = self.paused = False
        self.onset.reset()

    def check(self, window: int) -> Event | None:
        """Re-check the end rule after the transcript changed (no new window needed)."""
        if self.speaking and self.paused and self._due(window):
            return self._end()
        return None

    def _end(self) -> Event:
        self.speaking = self.paused = False
        self.onset.reset()
        return Event.END

"""Stop, then resume: caller sounds over the agent that turn out not to be an interruption.

    SPEAKING or PROCESSING --SpeechStarted--> audio stopped at once (`clear`), the reply held:
                                still generated and synthesized, nothing sent (held.py)
      SpeculativeFinal (the caller paused) whose text is a backchannel or holds no words, by the
                 rules below (call.backchannel_resume_at_pause)
          -> the reply resumes now, not after the end-of-turn wait; SpeechResumed (the caller
             went on) stops it again at once, and the turn is judged when it ends, as below
      TurnEnded: a backchannel ("uh-huh", "okay", "I see"; call.backchannels) or no words at all
                 (none in the text, only fillers such as "ah ah ah" (call.fillers) or a hum spelled
                 out ("M.H.M."), a few words Whisper scores as a guess
                 (call.no_words_guess_logprob) or heard broken off ("I'd be...") and is unsure of
                 (call.no_words_logprob), none of them a word that stops or asks
                 (call.interruption_words), or text Whisper rates no-speech and scores low:
                 call.no_words_prob, call.no_words_logprob)
          -> the reply resumes from the start of the sentence the caller stopped hearing;
             recorded as an event, not as a caller turn; no new LLM turn
      TurnEnded: more words, begun before the answer was heard or within call.went_on_window_ms
             of it -> the caller went on: one caller turn with both parts (went_on.py)
      TurnEnded: anything else -> a real interruption: cancel, cut the history to what the echoed
             marks prove was heard, answer it (the barge-in of before)

The barge-in budget is unchanged: the `clear` goes out on the onset, before anyone knows what the
caller is saying. The first mark after the resume proves what was heard, as before.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ipc.messages import SpeculativeFinal, SpeechResumed, TurnEnded
from voicecall.conversation.held import release

log = logging.getLogger("voicecall.call")
_WORDS = re.compile(r"[a-z0-9']+")
#: Whisper spells a hum it cannot place as the letters of it: "M.H.M.", "M-H-N", "MMMM.", "M.M." for
#: an "mm-hmm" (offline, 5 of 22 missed backchannels in 6 voices). No English word is only these letters.
_HUM = re.compile(r"[mhn]+")
#: A pause transcript ending so is a caller about to go on ("Okay, so..."): not resumed at the pause.
_GOING_ON = (",", "...", "…", "-", ";", ":")


def is_backchannel(text: str, phrases: list[str], max_words: int) -> bool:
    """True when `text` is only backchannel phrases (at most `max_words` words, a phrase said again
    in a row counted once: "Uh-huh, uh-huh." is two) or has no words."""
    words = _WORDS.findall(text.lower().replace("-", " "))
    if not words:
        return True
    known = {tuple(_WORDS.findall(p.lower().replace("-", " "))) for p in phrases}
    longest = max((len(k) for k in known), default=0)
    i = counted = 0
    last: tuple[str, ...] = ()
    while i < len(words):  # greedy: the longest known phrase at each position
        for n in range(min(longest, len(words) - i), 0, -1):
            phrase = tuple(words[i : i + n])
            if phrase in known:
                counted += 0 if phrase == last else n
                last = phrase
                i += n
                break
        else:
            return False
        if counted > max_words:
            return False
    return True


def holds_no_words(msg: TurnEnded | SpeculativeFinal, text: str, cfg: Any) -> bool:
    """True when the caller's sound carried no words: only fillers or a hum spelled out; a few words
    (none a word that stops or asks: call.interruption_words) Whisper scores as a guess, or heard
    broken off and is unsure of; or (Whisper's own rule for a silent segment) rated no-speech with a
    text it is unsure of."""
    words = _WORDS.findall(text.lower().replace("-", " "))
    fillers = {f.lower() for f in cfg.fillers}
    if all(w in fillers or _HUM.fullmatch(w) for w in words):
        return True
    if len(words) <= cfg.backchannel_max_words and not {w.lower() for w in cfg.interruption_words}.intersection(words):
        if msg.avg_logprob < cfg.no_words_guess_logprob:
            return True
        # A start broken off ("I'd be..." for an espeak "I see.", "And then..." for an "mm-hmm") that
        # the caller never went on with: by the turn's end (a trailing text waits the long silence)
        # there is nothing to answer. Only when Whisper is unsure of it: "My number is..." is a caller.
        if text.strip().endswith(("...", "…")) and msg.avg_logprob < cfg.no_words_logprob:
            return True
    return msg.no_speech_prob >= cfg.no_words_prob and msg.avg_logprob < cfg.no_words_logprob


class BackchannelPause:
    """The pause-and-decide side of one `CallSession` (`session` duck-typed)."""

    def __init__(self, session: Any) -> None:
        self.s = session
        self.turn = -1  # the caller turn whose speech paused the reply, -1 when not paused
        self.early = False  # the reply resumed at that turn's pause, before the turn ended
        self.resumed = 0

    @property
    def paused(self) -> bool:
        return self.turn >= 0

    def hold(self, turn_id: int, onset_media_ms: int) -> bool:
        """Caller speech started at `onset_media_ms` while the agent was answering: stop the audio
        now, keep the reply. False when it cannot be resumed (the session then interrupts as before)."""
        s = self.s
        reply = s.reply
        cfg = s.deps.cfg.call
        if reply is None or reply.apologised or reply.on_hold or not cfg.backchannels:
            return False
        if s._tool_tasks and not s._went_on.applies(reply, onset_media_ms):
            # A tool is running: stop it, as before, unless the caller may be going on with the words
            # it answers (nothing irreversible sent yet, e.g. a transfer still saying its handoff
            # line): "Can I talk to a person? ... please" must not cancel the transfer for good.
            return False
        s.port.clear()
        reply.on_hold = True
        self.turn = turn_id
        s._emit("paused", {"turn": reply.turn_id, "heard": reply.heard_text})
        return True

    def on_pause(self, msg: SpeculativeFinal) -> None:
        """The caller paused over the held reply and, so far, said only a backchannel (or made a
        sound with no words): resume now. The same text and scores end the turn if nothing follows."""
        s = self.s
        reply = s.reply
        cfg = s.deps.cfg.call
        text = msg.text.strip()
        if (not cfg.backchannel_resume_at_pause or msg.turn_id != self.turn or reply is None or not reply.on_hold
                or text.endswith(_GOING_ON)
                or not (holds_no_words(msg, text, cfg) or is_backchannel(text, cfg.backchannels, cfg.backchannel_max_words))):
            return
        self.early = True
        log.info("call %d: backchannel %r at a pause during turn %d; resuming after %r (the turn has not "
                 "ended: %d ms to go)", s.call_id, text, reply.turn_id, reply.heard_text, msg.silence_ms)
        s._emit("resumed", {"turn": reply.turn_id, "text": text, "at": "pause"})
        release(s, reply)
        s._maybe_reply_finished()

    def on_resumed(self, msg: SpeechResumed) -> None:
        """The caller went on after a pause the reply resumed at: stop its audio again, at once."""
        if not self.early or msg.turn_id != self.turn:
            return
        self.early = False
        s = self.s
        reply = s.reply
        if reply is None or reply.on_hold:
            return  # it played out meanwhile: the caller's words are a turn of their own
        s.port.clear()
        reply.on_hold = True
        s._emit("paused", {"turn": reply.turn_id, "heard": reply.heard_text})

    def abandon(self) -> None:
        """The sound that paused the reply cannot be judged (its start died with an stt worker):
        end the held reply as a real interruption would, so the caller can be asked again."""
        if not self.paused:
            return
        self.turn, self.early = -1, False
        reply = self.s.reply
        if reply is not None and reply.on_hold:
            reply.on_hold = False
            self.s._interrupt("barge-in (words lost with the stt worker)")

    def on_turn_ended(self, msg: TurnEnded, text: str) -> bool:
        """The caller's sound ended. True when it was a backchannel and the reply resumed; False
        when it is a real turn (the held reply was interrupted, the session answers the text)."""
        if not self.paused:
            return False
        s = self.s
        early, self.turn, self.early = self.early, -1, False
        reply = s.reply
        cfg = s.deps.cfg.call
        backchannel = holds_no_words(msg, text, cfg) or is_backchannel(text, cfg.backchannels, cfg.backchannel_max_words)
        if early:  # resumed at the pause and the caller said no more (it may even have played out)
            if backchannel:
                self._count(text)
                return True
            # The final heard more words than the pause did: a real interruption after all.
            s._interrupt("barge-in")
            return False
        if reply is None or not reply.on_hold:
            return False
        log.info("call %d: caller sound over turn %d: %r (no-speech %.2f, logprob %.2f, %d ms)", s.call_id,
                 reply.turn_id, text, msg.no_speech_prob, msg.avg_logprob, msg.audio_ms)
        if backchannel:
            self._count(text)
            s._emit("resumed", {"turn": reply.turn_id, "text": text})
            log.info("call %d: backchannel %r during turn %d; resuming after %r", s.call_id, text,
                     reply.turn_id, reply.heard_text)
            release(s, reply)
            s._maybe_reply_finished()
            return True
        reply.on_hold = False
        if s._went_on.applies(reply, msg.speech_start_media_ms):
            s._went_on.absorb(reply)  # the caller went on: one turn with what they said before
        else:
            s._interrupt("barge-in")
        return False

    def _count(self, text: str) -> None:
        s = self.s
        self.resumed += 1
        s.deps.metrics.backchannels.inc()
        if s.deps.records is not None:
            s.deps.records.event(s._row, "backchannel", text or "(no words)")

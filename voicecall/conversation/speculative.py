"""Speculative replies: start answering at the caller's pause, play it only if the turn really ended.

    SpeculativeFinal(turn N, text)   wait still to go <= call.speculative_max_silence_ms, nothing in flight:
        -> Generate(turn N, history + text, the call's tools: CallSession.generate_request) and
           its TTS, the reply held (nothing sent)
    TurnEnded(turn N, same text)     -> used: the caller's turn is recorded, the held audio plays
    SpeechResumed / other text / DTMF / hang-up / a tool call (runs only once the turn has ended)
        -> discarded: Cancel(turn N) to llm and tts, nothing of it is ever sent; the session
           listens on as turn N + 1 (a cancelled turn id cannot be reused: workers drop it)

Why a discarded turn moves the session to N + 1: the workers drop any request for a turn they
were told to cancel. The stt worker follows the turn stamped on inbound frames, but an event for
the old turn may already be on its way, so events for a discarded turn are read as the current one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec

from ipc.messages import SpeculativeFinal, TurnEnded

log = logging.getLogger("voicecall.call")


class SpeculativeReplies:
    """The speculative side of one `CallSession` (`session` duck-typed: reply, turn, links...)."""

    def __init__(self, session: Any) -> None:
        self.s = session
        self.turn = -1  # turn id of the held speculative reply, -1 when none
        self.text = ""
        self.discarded: set[int] = set()
        self.started = self.used = self.dropped = 0

    @property
    def active(self) -> bool:
        return self.turn >= 0

    def holds(self, reply: Any) -> bool:
        """Is `reply` the speculative one, still held (its turn has not ended)?"""
        return self.active and reply.turn_id == self.turn and reply.on_hold

    def remap(self, msg: Any) -> Any:
        """An stt event for a discarded turn belongs to the turn that replaced it."""
        if getattr(msg, "turn_id", None) in self.discarded:
            return msgspec.structs.replace(msg, turn_id=self.s.turn)
        return msg

    def on_final(self, msg: SpeculativeFinal) -> None:
        """The caller paused and their words so far are known: prepare the reply, silently."""
        s = self.s
        limit = s.deps.cfg.call.speculative_max_silence_ms
        text = msg.text.strip()
        if self.active:
            if msg.turn_id == self.turn and text == self.text:
                return
            self.discard("newer transcript")
        if (not limit or msg.silence_ms - msg.waited_ms > limit or msg.turn_id < s.turn or s.reply is not None
                or not any(ch.isalnum() for ch in text)):
            return
        llm, tts = s.deps.links["llm"], s.deps.links["tts"]
        if not (_ready(llm) and _ready(tts)):
            return
        history = s.conversation.with_caller(text)
        reply = s._begin_reply(msg.turn_id)
        reply.on_hold = True
        sent = llm.send(s.generate_request(msg.turn_id, history), s.call_id, msg.turn_id)
        if not sent:
            s.reply = None
            return
        s._arm_deadline("first token")
        self.turn, self.text = msg.turn_id, text
        self.started += 1
        s.deps.metrics.speculative.labels("started").inc()
        s._emit("speculative", {"turn": msg.turn_id, "text": text, "state": "started"})

    def adopt(self, msg: TurnEnded, text: str, stamps: Any) -> bool:
        """The turn ended: if with the text the reply was prepared for, make it the reply (True)."""
        if not self.active:
            return False
        if msg.turn_id != self.turn or text != self.text or self.s.reply is None:
            self.discard("the final transcript differs")
            return False
        s, reply = self.s, self.s.reply
        self.turn, self.text = -1, ""
        self.used += 1
        s.deps.metrics.speculative.labels("used").inc()
        s.conversation.add_caller(text)
        s._went_on.answering(msg.turn_id, text)
        if s.deps.records is not None:
            s.deps.records.turn(s._row, msg.turn_id, "caller", text, stamps=stamps)
            s.deps.records.event(s._row, "speculative", f"used for turn {msg.turn_id}")
        _merge_stamps(s, stamps)
        s.deps.metrics.turns_total.inc()
        s._emit("speculative", {"turn": msg.turn_id, "text": text, "state": "used"})
        s.state = s.state.__class__.PROCESSING
        s._wait_filler.reply_started(stamps.turn_end_ns)  # cancelled at once if its audio is ready
        from voicecall.conversation.held import release

        release(s, reply)
        s._maybe_reply_finished()
        return True

    def discard(self, why: str) -> None:
        """Abort the held reply: LLM request and TTS job cancelled, nothing of it sent."""
        if not self.active:
            return
        s, turn = self.s, self.turn
        self.turn, self.text = -1, ""
        self.dropped += 1
        self.discarded.add(turn)
        s.deps.metrics.speculative.labels("discarded").inc()
        if s.reply is not None and s.reply.turn_id == turn and s.reply.on_hold:
            s._cancel_reply()
            s._cancel_deadline()
            s.reply = None
        s.turn = max(s.turn, turn + 1)
        if s.deps.records is not None:
            s.deps.records.event(s._row, "speculative", f"discarded turn {turn}: {why}")
        s._emit("speculative", {"turn": turn, "state": "discarded", "why": why})
        log.debug("call %d: speculative reply for turn %d discarded (%s)", s.call_id, turn, why)


def note_turn_end(session: Any, msg: TurnEnded) -> None:
    """Count what ended the caller's turn (/metrics) and keep its signals in the call record."""
    session.deps.metrics.observe_turn_end(msg.turn_prob, msg.turn_check_ms, msg.turn_model_failed, msg.forced)
    if session.deps.records is not None:
        session.deps.records.event(session._row, "endpoint", json.dumps({
            "turn": msg.turn_id, "silence_ms": msg.endpoint_silence_ms, "turn_prob": round(msg.turn_prob, 3),
            "check_ms": round(msg.turn_check_ms, 1), "model_failed": msg.turn_model_failed, "forced": msg.forced,
            "second_look": msg.second_look, "text": msg.text, "avg_logprob": round(msg.avg_logprob, 2),
            "no_speech_prob": round(msg.no_speech_prob, 2)}))


def _merge_stamps(session: Any, caller: Any) -> None:
    """The caller's stamps (speech end, turn end, final) join the reply's own (LLM, TTS)."""
    if isinstance(session.stamps, dict):
        for name, value in caller.items():
            session.stamps.setdefault(name, value)
        return
    for name in caller.__struct_fields__:
        value = getattr(caller, name)
        if value and not getattr(session.stamps, name):
            setattr(session.stamps, name, value)


def _ready(link: Any) -> bool:
    state = getattr(link, "state", None)
    return str(getattr(state, "value", state)).lower() == "ready"

"""The caller went on: speech that starts right after the agent began answering continues the
caller's turn instead of starting a new one.

    caller turn N ends ("I need to cancel my appointment.")  -> reply N (PROCESSING, then SPEAKING)
    SpeechStarted while reply N is in flight                  -> audio stopped, reply held
                                                                 (voicecall/conversation/backchannel.py)
    TurnEnded(turn M, "And book a new one for Friday.") -- not a backchannel, and its onset came
        before any of reply N was sent or within `call.went_on_window_ms` of its first frame:
        -> reply N cancelled: not recorded as an agent turn, not in the LLM's history
        -> one caller turn "I need to cancel my appointment. And book a new one for Friday."
           (turn N's record rewritten as turn M), one reply M to both parts
        A tool reply N started is cancelled with it while it has sent nothing it cannot take
        back (a transfer still saying its handoff line); reply M may call it again. Once a tool's
        request went out (`AgentReply.acting`) the words are a real interruption instead.

A complete sentence followed by a pause and more words is ambiguous even for people: the
endpointer may answer the first half, and then the caller goes on over it. Outside the window
(the caller heard a real part of the answer) it is a real interruption, answered on its own.
"""

from __future__ import annotations

import logging
from typing import Any

from voicecall.conversation.history import AgentReply

log = logging.getLogger("voicecall.call")


class CallerWentOn:
    """The went-on side of one `CallSession` (`session` duck-typed)."""

    def __init__(self, session: Any) -> None:
        self.s = session
        self.answered_turn = -1  # the caller turn the live reply answers, and its text
        self.answered_text = ""
        #: the caller's media clock (ms) when the reply's first frame was sent; None: nothing sent yet
        self.reply_audio_media_ms: int | None = None
        self.pending: tuple[int, str] | None = None  # (turn, text) the next caller turn continues
        self.merged = 0

    def answering(self, turn_id: int, text: str) -> None:
        """A reply to caller turn `turn_id` starts (a fresh one, or a speculative one adopted)."""
        self.answered_turn, self.answered_text = turn_id, text
        self.reply_audio_media_ms = None

    def first_audio(self, media_ms: int) -> None:
        """The reply's first frame goes out now (`media_ms`: the caller's media clock)."""
        if self.reply_audio_media_ms is None:
            self.reply_audio_media_ms = media_ms

    def applies(self, reply: AgentReply, onset_media_ms: int) -> bool:
        """True when caller speech starting at `onset_media_ms` continues the turn `reply` answers."""
        window = self.s.deps.cfg.call.went_on_window_ms
        if not window or reply.turn_id != self.answered_turn or reply.turn_id <= 0:
            return False
        if reply.apologised or reply.tool_steps or reply.acting or reply.end_call:
            return False  # something was done or said that the caller must know about
        if self.reply_audio_media_ms is None:
            return True  # nothing of the answer was sent yet
        return onset_media_ms - self.reply_audio_media_ms <= window

    def absorb(self, reply: AgentReply) -> None:
        """Cancel `reply` as if it never was; the next caller turn is joined to the one it answered."""
        s = self.s
        s._cancel_reply()
        s._cancel_deadline()
        s.port.clear()
        s.reply = None
        s.state = s.state.__class__.LISTENING
        self.pending = (self.answered_turn, self.answered_text)
        self.merged += 1
        s.deps.metrics.went_on.inc()
        log.info("call %d: the caller went on after turn %d (%r); its reply dropped (heard %r)", s.call_id,
                 reply.turn_id, self.answered_text, reply.heard_text)

    def take(self, turn_id: int, text: str, stamps: Any) -> str | None:
        """Caller turn `turn_id` said `text`. When it continues an earlier turn: both parts, and the
        earlier turn's record was rewritten as this one with them (the history joins them itself:
        two caller messages in a row are one). None when it is a turn of its own."""
        if self.pending is None:
            return None
        (earlier_turn, earlier), self.pending = self.pending, None
        joined = f"{earlier} {text}".strip()
        s = self.s
        if s.deps.records is not None:
            s.deps.records.caller_went_on(s._row, earlier_turn, turn_id, joined, stamps=stamps)
        s._emit("went_on", {"turn": turn_id, "earlier_turn": earlier_turn, "text": joined})
        return joined

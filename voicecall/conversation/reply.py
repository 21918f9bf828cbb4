"""A call's reply in flight: its audio and marks out, its end, barge-in, deadlines and the apology.

`CallSession` (voicecall/conversation/session.py) handles the events; this base class keeps the
bookkeeping of the reply those events build, so the state machine reads in one place and the
reply's lifecycle in another. The state it works on is declared below and set up by the session.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ipc.messages import Cancel, PlaybackState
from voicecall.config import Config
from voicecall.conversation.canned import CannedAudio, CannedClip
from voicecall.conversation.held import keep_audio
from voicecall.conversation.history import AgentReply, Conversation, SpokenSentence
from voicecall.conversation.http_tools import HttpTools
from voicecall.conversation.links import WorkerLinks
from voicecall.conversation.metrics import CallMetrics
from voicecall.conversation.sentences import SentenceAggregator
from voicecall.conversation.wait_filler import WaitFiller
from voicecall.conversation.went_on import CallerWentOn
from voicecall.latency import TurnStamps, stage_latencies_ms
from voicecall.records import CallRecords
from voicecall.twilio.handler import CallStream
from voicecall.twilio.rest import TwilioRest

log = logging.getLogger("voicecall.call")


class CallState(enum.Enum):
    LISTENING = "listening"
    PROCESSING = "processing"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"
    ENDING = "ending"
    ENDED = "ended"


@dataclass
class CallInfo:
    call_sid: str = ""
    stream_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    #: the agent profile answering (voicecall/agents.py) and its greeting ("" = call.greeting)
    agent: str = ""
    greeting: str = ""
    #: "inbound" or "outbound"; an outbound call is greeted only once the callee has spoken or
    #: a timeout passed (voicecall/conversation/outbound_call.py calls `greet()`)
    direction: str = "inbound"
    recording_path: str = ""
    #: the agent's own system prompt (with the operator's context for this call); "" = the LLM's
    system_prompt: str = ""
    #: the agent's own knowledge file (faq backend); "" = `llm.knowledge`
    knowledge: str = ""
    #: the agent's transfer number ("" = `call.transfer_number`) and the tools it may use
    #: (empty = every configured tool)
    transfer_number: str = ""
    tools: list[str] = field(default_factory=list)


@dataclass
class SessionDeps:
    """Process-wide services every session shares."""

    cfg: Config
    links: WorkerLinks
    records: CallRecords | None
    metrics: CallMetrics
    canned: CannedAudio
    #: the Twilio REST client (transfer, hang-up); None where there is none (tests)
    rest: TwilioRest | None = None
    #: the operator's HTTP tools ([[tools]]); None when there are none
    http_tools: HttpTools | None = None
    #: observers of transcript/state events (the softphone and /calls views)
    listeners: list[Callable[[int, str, dict[str, Any]], None]] = field(default_factory=list)


class ReplyBookkeeping:
    """The reply half of a `CallSession` (see the module docstring)."""

    call_id: int
    deps: SessionDeps
    port: CallStream
    state: CallState
    reply: AgentReply | None
    stamps: TurnStamps
    conversation: Conversation
    turns_answered: int
    barge_ins: int
    fallbacks: int
    end_reason: str
    last_latency_ms: dict[str, float]
    _aggregator: SentenceAggregator
    _next_seq: int
    _generation_done: bool
    _synth_pending: set[int]
    _audio_seen_for_reply: bool
    _deadline: asyncio.TimerHandle | None
    _mark_counter: int
    _row_id: int | None
    _tasks: set[asyncio.Task[Any]]
    _on_reply_heard: Callable[[], None]  # CallActions
    _cancel_tools: Callable[[], None]  # CallActions
    _went_on: CallerWentOn
    _wait_filler: WaitFiller
    _last_media_ms: int

    def _set_row_id(self, row_id: int) -> None:
        self._row_id = row_id

    def _row(self) -> int | None:
        return self._row_id

    # ------------------------------------------------------------------ audio and marks out

    def _play(self, mulaw: bytes, first_audio_ns: int) -> None:
        if self.reply is not None and self.reply.on_hold:
            self._cancel_deadline()  # the audio came; it waits (voicecall/conversation/held.py)
            return
        if not self._audio_seen_for_reply:
            self._audio_seen_for_reply = True
            self._cancel_deadline()
            self._wait_filler.cancel()
            stamps = self.stamps
            stamps.tts_first_audio_ns = stamps.tts_first_audio_ns or first_audio_ns
            stamps.tts_first_audio_recv_ns = stamps.tts_first_audio_recv_ns or time.monotonic_ns()
            stamps.first_media_sent_ns = stamps.first_media_sent_ns or time.monotonic_ns()
            self._went_on.first_audio(self._last_media_ms)
            if self.state is not CallState.ENDING:
                self.state = CallState.SPEAKING
            assert self.reply is not None
            self.deps.links["stt"].send(
                PlaybackState(call_id=self.call_id, turn_id=self.reply.turn_id, playing=True, ts_ns=time.monotonic_ns()),
                self.call_id, self.reply.turn_id,
            )
        self.port.play(mulaw, self.reply.turn_id if self.reply is not None else None)

    def _place_mark(self, sentence: SpokenSentence) -> None:
        assert self.reply is not None
        if self.reply.on_hold:
            return  # placed when the reply is released
        self._mark_counter += 1
        sentence.mark = f"t{self.reply.turn_id}-s{sentence.seq}-{self._mark_counter}"
        self.port.mark(sentence.mark, self.reply.turn_id)

    # ------------------------------------------------------------------ reply bookkeeping

    def _begin_reply(self, turn_id: int) -> AgentReply:
        self.reply = AgentReply(turn_id)
        self.stamps = TurnStamps()
        self._aggregator = SentenceAggregator(self.deps.cfg.call.first_clause_min_chars)
        self._next_seq = 0
        self._generation_done = False
        self._synth_pending = set()
        self._audio_seen_for_reply = False
        return self.reply

    def _maybe_reply_finished(self) -> None:
        reply = self.reply
        if reply is None or not self._generation_done or self._synth_pending:
            return
        if any(not s.mark or not s.played for s in reply.sentences):
            return
        self._finish_reply(record=reply.turn_id > 0)
        if reply.end_call:
            self._end_call(self.end_reason or "agent said goodbye")  # idle, max duration set their own
        else:
            self._on_reply_heard()

    def _finish_reply(self, record: bool) -> None:
        reply = self.reply
        if reply is None:
            return
        self.reply = None
        self._cancel_deadline()
        self._wait_filler.cancel()
        if reply.turn_id > 0:
            self.conversation.add_agent(reply)
            self.turns_answered += 1
        sent_ns = self.port.first_sent_ns(reply.turn_id)
        if sent_ns and self._audio_seen_for_reply:
            self.stamps.first_media_sent_ns = sent_ns  # when the frame really left, not when queued
        stamps = msgspec.structs.replace(self.stamps)
        if record and self.deps.records is not None:
            self.deps.records.turn(
                self._row, reply.turn_id, "agent", reply.generated or reply.spoken_text, heard_text=reply.heard_text,
                interrupted=reply.interrupted, fallback=reply.fallback, stamps=stamps,
            )
        if reply.turn_id > 0:
            self.deps.metrics.observe_turn(stamps)
            self.last_latency_ms = stage_latencies_ms(stamps)
            self._emit("turn", {"turn": reply.turn_id, "latency_ms": self.last_latency_ms,
                                "interrupted": reply.interrupted, "heard": reply.heard_text})
        if self.state is not CallState.ENDED:
            self.state = CallState.LISTENING
            self.deps.links["stt"].send(
                PlaybackState(call_id=self.call_id, turn_id=reply.turn_id, playing=False, ts_ns=time.monotonic_ns()),
                self.call_id, reply.turn_id,
            )

    def _cancel_reply(self) -> None:
        reply = self.reply
        if reply is None:
            return
        self._cancel_tools()
        for name in ("llm", "tts"):
            self.deps.links[name].send(Cancel(call_id=self.call_id, turn_id=reply.turn_id), self.call_id, reply.turn_id)

    def _interrupt(self, why: str) -> None:
        """Barge-in: stop the audio now, cancel the turn everywhere, keep only what was heard."""
        reply = self.reply
        if reply is None:
            return
        self.state = CallState.INTERRUPTED
        self.port.clear()
        self._cancel_reply()
        reply.interrupted = True
        self.barge_ins += 1
        self.deps.metrics.barge_ins.inc()
        self._emit("interrupted", {"turn": reply.turn_id, "heard": reply.heard_text, "why": why})
        log.info("call %d: %s during turn %d; heard: %r", self.call_id, why, reply.turn_id, reply.heard_text)
        self._finish_reply(record=reply.turn_id > 0)

    # ------------------------------------------------------------------ failures and deadlines

    def _arm_deadline(self, what: str) -> None:
        self._cancel_deadline()
        delay = self.deps.cfg.call.worker_deadline_s
        self._deadline = asyncio.get_running_loop().call_later(delay, self._deadline_passed, what, delay)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self, what: str, delay: float) -> None:
        self._deadline = None
        if self.reply is None or self.state is CallState.ENDED:
            return
        log.warning("call %d turn %d: no %s within %.1f s (call.worker_deadline_s); apologising",
                    self.call_id, self.reply.turn_id, what, delay)
        self._cancel_reply()
        self._apologise(f"no {what} within {delay:.1f} s")

    def _apologise(self, why: str, clip: CannedClip | None = None) -> None:
        """Say the apology (or another canned `clip`) from the canned audio (works even while the TTS worker is down)."""
        reply = self.reply
        if reply is None:
            return
        self.fallbacks += 1
        self.deps.metrics.fallbacks.labels("apology").inc()
        if self.deps.records is not None:
            self.deps.records.event(self._row, "apology", why)
        self._cancel_deadline()
        clip = clip or self.deps.canned.apology
        self._generation_done = True
        self._synth_pending.clear()
        reply.fallback = True
        reply.apologised = True  # whatever a worker still sends for this turn is not spoken
        if not clip.ready:
            log.error("call %d: %s and no apology audio is available", self.call_id, why)
            self._finish_reply(record=True)
            return
        sentence = reply.add(10_000, clip.text)
        reply.generated = reply.generated or clip.text
        keep_audio(reply, sentence.seq, bytes(clip.audio))  # a held reply replays it when released
        self._play(bytes(clip.audio), first_audio_ns=time.monotonic_ns())
        sentence.frames = len(clip.audio) // 160
        self._place_mark(sentence)

    def _say_wait_filler(self, why: str) -> None:
        """The answer is late: say "One moment." from kept audio, outside any reply (no history, no stamps)."""
        reply = self.reply
        if self.state in (CallState.SPEAKING, CallState.INTERRUPTED):
            return
        if reply is not None and (self._audio_seen_for_reply or reply.on_hold or reply.apologised):
            return
        self._play_wait_filler(why, "reply")

    def _say_stt_wait_filler(self, why: str) -> None:
        """The caller stopped and the stt worker, stalled, cannot end the turn: the filler, unless an
        answer is audible. A reply held meanwhile (speculative, or paused for a possible
        backchannel) is silent: its caller waits on the stt worker like any other."""
        reply = self.reply
        if reply is None and self.state is CallState.SPEAKING:  # canned audio outside a reply
            return
        if reply is not None and not reply.on_hold:
            return
        self._play_wait_filler(why, "stt")

    def _play_wait_filler(self, why: str, kind: str) -> None:
        if self.state in (CallState.ENDING, CallState.ENDED):
            return
        clip = self.deps.canned.wait_filler
        if not clip.ready:
            return  # the TTS worker has not made it yet (or was restarted): silence, as before
        self.deps.metrics.wait_fillers.labels(kind).inc()
        if self.deps.records is not None:
            self.deps.records.event(self._row, "wait_filler", why)
        log.info("call %d: %s; saying %r", self.call_id, why, clip.text)
        self.port.play(bytes(clip.audio))

    def _end_call(self, reason: str) -> None:
        self.end_reason = reason
        self.state = CallState.ENDING
        task = asyncio.get_running_loop().create_task(self.port.hang_up(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        for listener in self.deps.listeners:
            try:
                listener(self.call_id, kind, data)
            except Exception:  # a view must never break a call
                log.exception("call view listener failed")

"""CallSession: one live call's conversation, an explicit state machine driven by events.

    LISTENING --TurnEnded--> PROCESSING --first audio--> SPEAKING --all marks played--> LISTENING
         ^                       |                          |
         |                       +------ SpeechStarted -----+--> INTERRUPTED (clear, Cancel, cut) --+
         +------------------------------------------------------------------------------------------+

Events come from the media stream (frames, marks, DTMF, stop) and from the workers (speech,
transcripts, tokens, audio, sentence ends), all on the event loop, all tagged with `turn_id`.
The caller's turn `N` is answered as reply turn `N`; anything a worker sends for a turn other
than the live reply is stale and dropped. Every wait on a worker has a deadline; when one
passes, or a worker dies mid-turn, the caller hears the apology instead of silence. The
reply's own bookkeeping (audio and marks out, its end, barge-in, deadlines, the apology) is
`ReplyBookkeeping` in voicecall/conversation/reply.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import msgspec

from ipc.messages import (
    KIND_AUDIO,
    KIND_TEXT,
    CallClosed,
    CallOpened,
    EchoIgnored,
    Generate,
    GenerationDone,
    GenerationFailed,
    LlmEvent,
    Partial,
    SentenceDone,
    SpeculativeFinal,
    SpeechResumed,
    SpeechStarted,
    SttEvent,
    SynthesisFailed,
    Synthesize,
    ToolCall,
    TtsEvent,
    TurnEnded,
    WorkerEvent,
    WorkerState,
)
from ipc.ring import Record
from voicecall.conversation.actions import CallActions
from voicecall.conversation.backchannel import BackchannelPause
from voicecall.conversation.held import keep_audio
from voicecall.conversation.history import AgentReply, Conversation
from voicecall.conversation.missed_words import MissedWords
from voicecall.conversation.reply import CallInfo, CallState, ReplyBookkeeping, SessionDeps
from voicecall.conversation.sentences import SentenceAggregator
from voicecall.conversation.speculative import SpeculativeReplies, note_turn_end
from voicecall.conversation.wait_filler import WaitFiller, frame_is_loud
from voicecall.conversation.went_on import CallerWentOn
from voicecall.latency import TurnStamps
from voicecall.twilio.handler import CallStream

log = logging.getLogger("voicecall.call")


class CallSession(ReplyBookkeeping, CallActions):
    """The conversation of one call."""

    def __init__(self, call_id: int, info: CallInfo, port: CallStream, deps: SessionDeps) -> None:
        self.call_id = call_id
        self.info = info
        self.port = port
        self.deps = deps
        self._stt = deps.links["stt"]  # every inbound frame goes there: resolved once
        cfg = deps.cfg
        self.state = CallState.LISTENING
        self.turn = 1  # the caller turn being listened to; frames are stamped with it
        self.reply: AgentReply | None = None
        self.stamps = TurnStamps()
        self.conversation = Conversation(cfg.call.max_history_turns, info.system_prompt)
        self._aggregator = SentenceAggregator(cfg.call.first_clause_min_chars)
        self._next_seq = 0
        self._generation_done = False
        self._synth_pending: set[int] = set()
        self._deadline: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._row_id: int | None = None
        self._mark_counter = 0
        self.started_ns = time.monotonic_ns()
        self.turns_answered = 0
        self.barge_ins = 0
        self.fallbacks = 0
        self.last_latency_ms: dict[str, float] = {}
        self.end_reason = ""
        self._audio_seen_for_reply = False
        self._init_actions()
        self.missed = MissedWords(self._ask_again)
        self._last_media_ms = -1
        self._echo_turn = -1  # the last turn an echo was logged and recorded for
        #: (media ms, arrival ns) of the last 3 s of frames: when the frame a barge-in began in arrived
        self._arrivals: deque[tuple[int, int]] = deque(maxlen=150)
        self.greeted = False
        self.leaving_message = False
        self._spec = SpeculativeReplies(self)  # replies prepared at the caller's pause
        self._backchannel = BackchannelPause(self)  # "uh-huh" over the agent: stop, then resume
        self._went_on = CallerWentOn(self)  # more words right after the answer began: one turn
        self._wait_filler = WaitFiller(cfg.call, self._say_wait_filler, self._stt.unread_for_ms,  # "One moment."
                                       self._reply_workers_stalled_ms, say_for_stt=self._say_stt_wait_filler)

    def _reply_workers_stalled_ms(self, now_ns: int) -> float:
        """How long the llm or tts worker (the ones a reply waits on) has left its requests unread;
        a worker that is down is not counted: its calls hear the apology instead."""
        return max((link.unread_for_ms(now_ns) for link in (self.deps.links["llm"], self.deps.links["tts"])
                    if link.state is WorkerState.READY), default=0.0)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Register with the workers, open the record, greet the caller."""
        links = self.deps.links
        links.register(self.call_id, self._on_worker_record)
        now = time.monotonic_ns()
        links["stt"].send(CallOpened(call_id=self.call_id, opened_ns=now), self.call_id)
        links["tts"].send(CallOpened(call_id=self.call_id, opened_ns=now), self.call_id)
        if self.deps.cfg.stt.vad.echo_explained_db > 0:
            self.port.tap_played(self._on_played)  # the stt worker's echo gate hears what the caller heard
        if self.deps.records is not None:
            info = self.info
            self.deps.records.call_started(
                self._set_row_id, call_sid=info.call_sid, stream_sid=info.stream_sid,
                from_number=info.from_number, to_number=info.to_number, agent=info.agent or None,
                direction=info.direction, recording_path=info.recording_path or None,
            )
        self.deps.metrics.calls_total.inc()
        self.deps.metrics.calls_live.inc()
        self._silence.start()
        if self.info.direction != "outbound":
            self.greet()

    def greet(self) -> None:
        """Say the agent's greeting (once per call; at once from kept audio when it has it)."""
        if self.greeted or self.state in (CallState.ENDING, CallState.ENDED):
            return
        self.greeted = True
        text = self.info.greeting or self.deps.cfg.call.greeting
        if not text:
            return
        reply = self._begin_reply(0)
        clip = self.deps.canned.clip_for(text)
        sentence = reply.add(0, text)
        if clip is not None and clip.ready:  # synthesized ahead: the caller hears it at once
            keep_audio(reply, 0, bytes(clip.audio))
            self._play(bytes(clip.audio), first_audio_ns=time.monotonic_ns())
            sentence.frames = len(clip.audio) // 160
            self._place_mark(sentence)
            self._generation_done = True
        else:
            self._synthesize(0, text)
            self._generation_done = True
        self.conversation.add_greeting(text)
        self._emit("agent", {"text": text, "turn": 0})

    def leave_message(self, text: str) -> None:
        """An answering machine after its beep: say `text`, uninterruptible, then hang up."""
        if self.state in (CallState.ENDING, CallState.ENDED) or self.leaving_message:
            return
        if not text:  # nothing to leave: do not talk to the machine
            self._end_call("answering machine")
            return
        if self.reply is not None:
            self._interrupt("answering machine")
        self.greeted = self.leaving_message = True
        turn, self.turn = self.turn, self.turn + 1  # a turn of its own: stale worker output is dropped
        reply = self._begin_reply(turn)
        reply.end_call = True  # hang up once its mark says it has played
        self.state = CallState.PROCESSING
        self._speak_piece(text)
        self._generation_done = True
        log.info("call %d: answering machine; leaving the voicemail message", self.call_id)

    def on_media(self, frame: bytes, seq: int, media_ms: int, arrival_ns: int) -> None:
        """An inbound 20 ms frame: straight to the stt worker, stamped with the caller turn."""
        if self.state is CallState.ENDED:
            return
        self._last_media_ms = media_ms
        self._arrivals.append((media_ms, arrival_ns))
        loud = frame_is_loud(frame)  # telephony's own ear, for when the stt worker is not listening
        reply = self.reply
        self._wait_filler.on_frame(loud, listening=reply.on_hold if reply is not None else self.state is not CallState.SPEAKING)
        self.missed.on_frame(loud)
        if self._stt.send_audio(frame, self.call_id, self.turn, seq, media_ms, arrival_ns):
            self.missed.on_sent()
        else:
            self.deps.metrics.dropped.labels("stt_ring").inc()
            self.missed.on_dropped(loud, media_ms)

    def _on_played(self, frame: bytes, play_ns: int) -> None:
        """A frame just sent to Twilio, heard by the caller from `play_ns`: to the echo gate."""
        if self.state is not CallState.ENDED:
            self._stt.send_played(frame, self.call_id, play_ns)

    def on_mark(self, name: str, played: bool, now_ns: int | None = None) -> None:
        """A mark came back: `played` False means a `clear` dropped the audio before it."""
        reply = self.reply
        if reply is None:
            return
        sentence = reply.by_mark(name)
        if sentence is None:
            return
        if played:
            sentence.played = True
            if not self.stamps.first_mark_echoed_ns:
                self.stamps.first_mark_echoed_ns = now_ns or time.monotonic_ns()
        self._check_heard()
        self._maybe_reply_finished()

    def on_dtmf(self, digit: str) -> None:
        """Keypad digits reach the conversation as one message, once the caller stops pressing."""
        self._on_keypad(digit)

    def _answer_text(self, turn: int, text: str) -> None:
        """A caller turn that is not speech (keypad digits)."""
        if self.reply is not None and self.state in (CallState.PROCESSING, CallState.SPEAKING):
            self._interrupt("dtmf")
        now = time.monotonic_ns()
        self._answer(turn, text, TurnStamps(turn_end_ns=now, stt_final_ns=now))

    def _ended(self) -> bool:
        return self.state in (CallState.ENDED, CallState.ENDING)

    def _set_processing(self) -> None:
        self.state = CallState.PROCESSING

    async def close(self, reason: str) -> None:
        """The stream ended (stop, socket gone, hang-up): cancel everything, close the record."""
        if self.state is CallState.ENDED:
            return
        self._spec.discard("call ended")
        if self.reply is not None and self.state in (CallState.PROCESSING, CallState.SPEAKING):
            self.reply.interrupted = not self.reply.all_heard
            self._cancel_reply()
            self._finish_reply(record=True)
        self.state = CallState.ENDED
        self.end_reason = self.end_reason or reason
        self._cancel_deadline()
        self._wait_filler.cancel()
        self._close_actions()
        self.missed.close()
        links = self.deps.links
        for name in ("stt", "llm", "tts"):
            links[name].send(CallClosed(call_id=self.call_id), self.call_id)
        links.unregister(self.call_id)
        for task in list(self._tasks):
            task.cancel()
        if self.deps.records is not None:
            self.deps.records.call_ended(self._row, self.end_reason, fallbacks=self.fallbacks, barge_ins=self.barge_ins)
        self.deps.metrics.calls_live.dec()
        self._emit("ended", {"reason": self.end_reason})
        log.info("call %d ended: %s (%d turns, %d barge-ins)", self.call_id, self.end_reason, self.turns_answered, self.barge_ins)

    # ------------------------------------------------------------------ worker events

    def _on_worker_record(self, worker: str, rec: Record, msg: WorkerEvent | None) -> None:
        if self.state is CallState.ENDED:
            return
        match msg:
            case SpeechStarted() | Partial() | TurnEnded() | SpeculativeFinal() | SpeechResumed():
                self._on_stt(msg)
            case EchoIgnored():
                self._on_echo(msg)
            case GenerationDone() | GenerationFailed() | ToolCall():
                self._on_llm(rec, msg)
            case SentenceDone() | SynthesisFailed():
                self._on_tts(rec, msg)
            case None if worker == "llm":
                self._on_llm(rec, None)
            case None if worker == "tts":
                self._on_tts(rec, None)

    def _on_stt(self, msg: SttEvent) -> None:
        if self.leaving_message:
            return  # a voicemail message is not interrupted by the machine's own sounds
        msg = self._spec.remap(msg)
        if isinstance(msg, SpeculativeFinal):
            if self._backchannel.paused:
                self._backchannel.on_pause(msg)
            elif self.greeted:
                self._spec.on_final(msg)
        elif isinstance(msg, SpeechResumed):
            self._spec.discard("the caller went on")
            self._backchannel.on_resumed(msg)
        elif isinstance(msg, SpeechStarted):
            if msg.turn_id < self.turn:
                return
            self._emit("speech", {"turn": msg.turn_id})
            self._silence.caller_active()
            self.missed.speech_started()
            over_agent = self.reply is not None and self.state in (CallState.PROCESSING, CallState.SPEAKING)
            if self.state in (CallState.SPEAKING, CallState.PROCESSING) and self._backchannel.hold(msg.turn_id, msg.media_ms):
                self._observe_stop(msg)
                return  # audio stopped; resumed, joined or interrupted once we know what was said
            if over_agent:
                self._interrupt("barge-in")
                self._observe_stop(msg)
        elif isinstance(msg, Partial):
            if msg.turn_id >= self.turn:
                self._emit("partial", {"text": msg.text, "turn": msg.turn_id})
        elif isinstance(msg, TurnEnded):
            if msg.turn_id < self.turn:
                return
            text = msg.text.strip()
            self._emit("final", {"text": text, "turn": msg.turn_id})
            self.turn = msg.turn_id + 1
            self._wait_filler.turn_ended()
            note_turn_end(self, msg)
            if self.missed.turn_ended(msg.speech_start_media_ms):  # the rest of an utterance whose start died with stt
                self._spec.discard("stt restarted")
                self._ask_again(f"heard only {text!r} after an stt restart", msg.turn_id)
                return
            if self._backchannel.on_turn_ended(msg, text):
                return  # a backchannel or no words over the agent: its answer resumed
            spoken_ns = max(msg.speech_end_media_ms - msg.speech_start_media_ms, 0) * 1_000_000
            stamps = TurnStamps(
                speech_start_ns=msg.speech_end_ns - spoken_ns, speech_end_ns=msg.speech_end_ns,
                turn_end_ns=msg.turn_end_ns, stt_final_ns=msg.stt_final_ns, stt_final_recv_ns=time.monotonic_ns(),
            )
            if self._spec.adopt(msg, text, stamps):
                return  # the reply prepared at the pause plays now
            turn_id = msg.turn_id
            if turn_id in self._spec.discarded:  # its speculative reply was just cancelled: a fresh id
                turn_id, self.turn = self.turn, self.turn + 1
            if not text or not any(ch.isalnum() for ch in text):
                return  # noise with no words: keep listening
            if self.reply is not None and self.state is CallState.SPEAKING:
                # speech that never passed the barge-in minimum: a backchannel, not a turn
                self.deps.metrics.false_barge_ins.inc()
                return
            if not self.greeted:  # outbound: the callee's "Hello?" is answered with the greeting
                if self.deps.records is not None:
                    self.deps.records.turn(self._row, msg.turn_id, "caller", text)
                self.conversation.add_caller(text)
                self.greet()
                return
            self._answer(turn_id, text, stamps)

    def generate_request(self, turn_id: int, history: Conversation) -> Generate:
        """The llm request for `turn_id` over `history`, the same for a speculative turn and a real
        one (the agent's tools and knowledge file included), so a held reply can stand in for it."""
        llm = self.deps.cfg.llm
        return Generate(call_id=self.call_id, turn_id=turn_id, messages=history.messages(),
                        max_tokens=llm.max_tokens, temperature=llm.temperature, sent_ns=time.monotonic_ns(),
                        tools=self._offered_tools(), knowledge=self.info.knowledge)

    def _answer(self, turn_id: int, text: str, stamps: TurnStamps) -> None:
        """Start the reply to caller turn `turn_id` (superseding any reply still in flight)."""
        self._spec.discard("superseded")
        if self.reply is not None:
            self._interrupt("new caller turn")
        self._silence.caller_active()
        self.conversation.add_caller(text)
        joined = self._went_on.take(turn_id, text, stamps)
        if joined is None and self.deps.records is not None:
            self.deps.records.turn(self._row, turn_id, "caller", text, stamps=stamps)
        self._went_on.answering(turn_id, joined or text)
        self._begin_reply(turn_id)
        self.stamps = msgspec.structs.replace(stamps)
        self.state = CallState.PROCESSING
        self.deps.metrics.turns_total.inc()
        llm = self.deps.links["llm"]
        # A request queued to a dead worker would be answered by its successor, after the apology.
        sent = llm.state is WorkerState.READY and llm.send(
            self.generate_request(turn_id, self.conversation), self.call_id, turn_id)
        if not sent:
            self._apologise("llm unavailable")
            return
        self._arm_deadline("first token")
        self._wait_filler.reply_started(stamps.turn_end_ns)

    def _on_llm(self, rec: Record, msg: LlmEvent | None) -> None:
        """TEXT records (token deltas, `msg` None) and the generation's end."""
        reply = self.reply
        if reply is None or rec.turn_id != reply.turn_id or reply.interrupted or reply.apologised:
            return
        if rec.kind == KIND_TEXT:
            delta = rec.payload.decode("utf-8", "replace")
            if not self.stamps.llm_first_token_ns:
                self.stamps.llm_first_token_ns = rec.ts_ns
                self.stamps.llm_first_token_recv_ns = time.monotonic_ns()
            reply.generated += delta
            for piece in self._aggregator.push(delta):
                self._speak_piece(piece)
        elif isinstance(msg, GenerationDone):
            self._generation_done = True
            reply.end_call = msg.end_call
            reply.fallback = reply.fallback or msg.fallback
            if msg.fallback:
                self.fallbacks += 1
                self.deps.metrics.fallbacks.labels("llm").inc()
            for piece in self._aggregator.flush():
                self._speak_piece(piece)
            if not reply.sentences and msg.end_call:
                self._speak_piece(self.deps.cfg.call.goodbye)  # ended without a word: say goodbye
            elif not reply.sentences:
                self._apologise("empty reply")
            self._maybe_reply_finished()
        elif isinstance(msg, ToolCall):
            self._on_tool_call(reply, msg)
        elif isinstance(msg, GenerationFailed):
            log.warning("call %d turn %d: generation failed: %s", self.call_id, rec.turn_id, msg.reason)
            self._generation_done = True
            if not reply.sentences:
                self._apologise(f"llm failed: {msg.reason}")
            self._maybe_reply_finished()

    def _speak_piece(self, text: str) -> None:
        assert self.reply is not None
        seq = self._next_seq
        self._next_seq += 1
        self.reply.add(seq, text)
        if not self.stamps.first_clause_ns:
            self.stamps.first_clause_ns = time.monotonic_ns()
        self._synthesize(seq, text)
        self._emit("agent", {"text": text, "turn": self.reply.turn_id})

    def _synthesize(self, seq: int, text: str) -> None:
        assert self.reply is not None
        self._synth_pending.add(seq)
        tts = self.deps.links["tts"]
        ok = tts.state is WorkerState.READY and tts.send(
            Synthesize(call_id=self.call_id, turn_id=self.reply.turn_id, seq=seq, text=text, sent_ns=time.monotonic_ns()),
            self.call_id, self.reply.turn_id, seq,
        )
        if not ok:
            self._apologise("tts unavailable")
            return
        if not self._audio_seen_for_reply:
            self._arm_deadline("first audio")

    def _on_tts(self, rec: Record, msg: TtsEvent | None) -> None:
        """AUDIO records (`msg` None) and each sentence's end."""
        reply = self.reply
        if reply is None or rec.turn_id != reply.turn_id or reply.interrupted or reply.apologised:
            return
        if rec.kind == KIND_AUDIO:
            keep_audio(reply, rec.seq, rec.payload)
            self._play(rec.payload, first_audio_ns=rec.ts_ns)
        elif isinstance(msg, SentenceDone):
            self._synth_pending.discard(msg.seq)
            sentence = next((s for s in reply.sentences if s.seq == msg.seq), None)
            if sentence is not None:
                sentence.frames = msg.frames
                self._place_mark(sentence)
        elif isinstance(msg, SynthesisFailed):
            log.warning("call %d turn %d: sentence %d not synthesized: %s", self.call_id, rec.turn_id, msg.seq, msg.reason)
            self._synth_pending.discard(msg.seq)
            reply.sentences = [s for s in reply.sentences if s.seq != msg.seq]
            self._maybe_reply_finished()

    def on_worker_status(self, worker: str, state: WorkerState) -> None:
        """A worker died or came back while this call is live."""
        if state is not WorkerState.READY:
            self._spec.discard(f"{worker} worker {state.value}")
        if worker == "stt" and state is WorkerState.READY:
            self.missed.stt_ready()
        elif worker == "stt":
            self.missed.stt_restarting(self._last_media_ms)
        if state is WorkerState.READY:
            if worker in ("stt", "tts"):  # a fresh worker has no per-call state
                self.deps.links[worker].send(CallOpened(call_id=self.call_id, opened_ns=time.monotonic_ns()), self.call_id)
            return
        reply = self.reply
        if reply is None or reply.interrupted:
            return
        if worker == "llm" and self.state is CallState.PROCESSING and not reply.sentences:
            self._apologise("llm worker restarting")
        elif worker == "tts" and (self._synth_pending or self.state is CallState.PROCESSING):
            self._cancel_reply()
            self._apologise("tts worker restarting")

    def _observe_stop(self, msg: SpeechStarted) -> None:
        """Where a barge-in's stop time went: from the arrival of the frame the caller's speech began
        in to the stt worker's onset (its `min_speech_ms` of listening included), then to `clear`."""
        onset_arrival = next((ns for ms, ns in reversed(self._arrivals) if ms <= msg.media_ms), 0)
        now = time.monotonic_ns()
        if not onset_arrival or not onset_arrival <= msg.detected_ns <= now:
            return
        detect_ms, deliver_ms = (msg.detected_ns - onset_arrival) / 1e6, (now - msg.detected_ns) / 1e6
        self.deps.metrics.barge_in_stop.labels("detect").observe(detect_ms / 1e3)
        self.deps.metrics.barge_in_stop.labels("deliver").observe(deliver_ms / 1e3)
        log.info("call %d: caller speech over the agent: audio cleared %.0f ms after its first frame arrived "
                 "(stt onset %.0f ms, then %.0f ms to clear)", self.call_id, detect_ms + deliver_ms, detect_ms, deliver_ms)
        if self.deps.records is not None:  # per stop, so a benchmark can place the onset in its own audio
            self.deps.records.event(self._row, "barge_in_stop", msgspec.json.encode({
                "onset_media_ms": msg.media_ms, "detect_ms": round(detect_ms, 1), "deliver_ms": round(deliver_ms, 1),
            }).decode())

    def _on_echo(self, msg: EchoIgnored) -> None:
        """The stt worker heard the agent's own audio come back on the line and did not take it for
        the caller: counted; logged and recorded once per agent turn (it repeats while echo goes on)."""
        self.deps.metrics.echo_ignored.inc()
        if msg.turn_id == self._echo_turn:
            return
        self._echo_turn = msg.turn_id
        log.info("call %d: the line echoes the agent back (%.0f ms after it played, %.0f dB): not taken for the "
                 "caller (the fit leaves %.0f dB less of the sound; %.1f ms)", self.call_id, msg.delay_ms,
                 msg.echo_db, msg.explained_db, msg.check_ms)
        if self.deps.records is not None:
            self.deps.records.event(self._row, "echo", msgspec.json.encode({
                "media_ms": msg.media_ms, "delay_ms": msg.delay_ms, "echo_db": msg.echo_db,
                "explained_db": msg.explained_db, "check_ms": msg.check_ms}).decode())

    def _ask_again(self, why: str, turn_id: int | None = None) -> None:
        """The caller's words were lost: say "missed that, say it again" as the reply to their turn."""
        if self.state is CallState.ENDED:
            return
        # An answer held for the lost sound (a backchannel or not?) would wait forever for a
        # TurnEnded no worker will send: it ends as a real interruption would.
        self._backchannel.abandon()
        if self.reply is not None:
            return  # something is being said already; the caller can speak over it
        if turn_id is None:  # no TurnEnded came: close the lost turn here, so nothing late answers it
            turn_id = self.turn
            self.turn += 1
        log.info("call %d turn %d: asking the caller to repeat (%s)", self.call_id, turn_id, why)
        if self.deps.records is not None:
            self.deps.records.event(self._row, "missed_words", why)
        self._begin_reply(turn_id)
        self.state = CallState.PROCESSING
        self._apologise(why, clip=self.deps.canned.missed_words)

    def snapshot(self) -> dict[str, Any]:
        """Live state for the /calls view."""
        return {
            "call_id": self.call_id, "call_sid": self.info.call_sid, "from": self.info.from_number,
            "state": self.state.value, "turns": self.turns_answered, "barge_ins": self.barge_ins,
            "age_s": round((time.monotonic_ns() - self.started_ns) / 1e9, 1), "last_latency_ms": self.last_latency_ms,
        }


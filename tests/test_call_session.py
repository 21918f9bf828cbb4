"""CallSession's state machine over real rings, with the test speaking the workers' protocol.

The workers themselves are exercised by their own tests and end to end; here the test stands on
the far end of each ring so it can place events at exact moments (a barge-in between two
sentences, a stale record after a cancel, a worker dying mid-turn).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from ipc.messages import (
    KIND_AUDIO,
    KIND_MESSAGE,
    KIND_TEXT,
    Cancel,
    Codec,
    Generate,
    GenerationDone,
    LlmRequest,
    SentenceDone,
    SpeculativeFinal,
    SpeechResumed,
    SpeechStarted,
    SttRequest,
    Synthesize,
    ToolCall,
    TtsRequest,
    TurnEnded,
    WorkerState,
)
from ipc.ring import OwnedRing
from tests.waiting import wait_until_async
from voicecall.config import Config
from voicecall.conversation.canned import CannedAudio
from voicecall.conversation.links import WorkerLinks
from voicecall.conversation.metrics import CallMetrics
from voicecall.conversation.session import CallInfo, CallSession, CallState, SessionDeps

FRAME = b"\x7f" * 160  # mu-law silence
LOUD = bytes(range(160))  # full-scale mu-law codes: loud


class FakePort:
    """Stands in for the Twilio media stream: records what the session asked it to do."""

    def __init__(self) -> None:
        self.played: list[bytes] = []
        self.marks: list[str] = []
        self.clears = 0
        self.hung_up: str | None = None

    def play(self, mulaw: bytes, turn_id: int | None = None) -> None:
        self.played.append(mulaw)

    def mark(self, name: str, turn_id: int | None = None) -> Any:
        self.marks.append(name)

    def clear(self) -> int:
        self.clears += 1
        return 0

    def first_sent_ns(self, turn_id: int) -> int | None:
        return None

    def tap_played(self, tap: Any) -> None:
        self.tap = tap

    async def hang_up(self, reason: str) -> None:
        self.hung_up = reason


class FarEnd:
    """The workers' ends of the six rings."""

    def __init__(self, rings: dict[str, OwnedRing]) -> None:
        self.out = {w: rings[f"{w}_out"].spec.producer() for w in ("stt", "llm", "tts")}
        self.inbox = {w: rings[f"{w}_in"].spec.consumer() for w in ("stt", "llm", "tts")}
        self.codecs = {"stt": Codec(SttRequest), "llm": Codec(LlmRequest), "tts": Codec(TtsRequest)}
        self.enc = msgspec.msgpack.Encoder().encode

    def emit(self, worker: str, msg: msgspec.Struct, call_id: int, turn_id: int, seq: int = 0) -> None:
        assert self.out[worker].write(KIND_MESSAGE, self.enc(msg), call_id, turn_id, seq)

    def audio(self, call_id: int, turn_id: int, seq: int, frames: int = 2) -> None:
        assert self.out["tts"].write(KIND_AUDIO, FRAME * frames, call_id, turn_id, seq)

    def tokens(self, call_id: int, turn_id: int, text: str) -> None:
        for i, word in enumerate(text.split(" ")):
            assert self.out["llm"].write(KIND_TEXT, (word + " ").encode(), call_id, turn_id, i)

    def requests(self, worker: str) -> list[Any]:
        return [self.codecs[worker].decode(r.payload) for r in self.inbox[worker].read_batch() if r.kind == KIND_MESSAGE]

    def delivered(self) -> bool:
        return all(st.records_out == st.records_in for st in (end.stats() for end in self.out.values()))

    def close(self) -> None:
        for end in (*self.out.values(), *self.inbox.values()):
            end.close()


async def _settle(far: FarEnd) -> None:
    """Until the session has read every record the workers' ends wrote.

    It handles each record as it reads it (synchronously, on this loop), so after this what the
    session did about them is done: requests written, port called, state changed.
    """
    await wait_until_async(far.delivered, 5, "the session to read every record the workers' ends wrote", poll_s=0.001)


def _run(scenario, info: CallInfo | None = None) -> None:  # noqa: ANN001
    rings = {label: OwnedRing(label, 1 << 16) for label in ("stt_in", "stt_out", "llm_in", "llm_out", "tts_in", "tts_out")}
    far = FarEnd(rings)
    try:
        async def main() -> None:
            links = WorkerLinks({k: r.spec for k, r in rings.items()})
            links.start()
            for w in ("stt", "llm", "tts"):
                links.set_state(w, WorkerState.READY)
            cfg = Config()
            deps = SessionDeps(cfg=cfg, links=links, records=None, metrics=CallMetrics(),
                               canned=CannedAudio(cfg.call.greeting, cfg.call.apology))
            port = FakePort()
            session = CallSession(1, info or CallInfo(call_sid="CA1"), port, deps)
            session.start()
            try:
                await scenario(session, port, far)
            finally:
                await session.close("test over")
                links.close()

        asyncio.run(main())
    finally:
        far.close()
        for r in rings.values():
            r.close()


def _turn_ended(turn: int, text: str, start_ms: int = 5000) -> TurnEnded:
    """Turn `turn` said `text`, its speech starting at `start_ms` of the caller's media clock (no
    media flows in these tests: the clock stays at -1, where the agent's first frame went out)."""
    return TurnEnded(call_id=1, turn_id=turn, text=text, speech_start_media_ms=start_ms,
                     speech_end_media_ms=start_ms + 900, speech_end_ns=1, turn_end_ns=2, stt_final_ns=3)


async def _finish_greeting(session: CallSession, port: FakePort, far: FarEnd) -> None:
    await _settle(far)
    greet = [m for m in far.requests("tts") if isinstance(m, Synthesize)]
    assert greet and greet[0].turn_id == 0
    far.audio(1, 0, 0)
    far.emit("tts", SentenceDone(call_id=1, turn_id=0, seq=0, frames=2, duration_ms=40, first_audio_ns=1), 1, 0)
    await _settle(far)
    session.on_mark(port.marks[-1], played=True)
    assert session.state is CallState.LISTENING


def test_turn_streams_through_llm_and_tts_and_finishes_on_marks() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _finish_greeting(session, port, far)
        far.emit("stt", _turn_ended(1, "What are your hours?"), 1, 1)
        await _settle(far)
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert gen and gen[0].turn_id == 1 and gen[0].messages[-1].content == "What are your hours?"
        assert session.state is CallState.PROCESSING and session.turn == 2
        far.tokens(1, 1, "We open at eight in the morning. We close at five.")
        far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="stop"), 1, 1)
        await _settle(far)
        synth = [m for m in far.requests("tts") if isinstance(m, Synthesize)]
        assert [s.text for s in synth] == ["We open at eight in the morning.", "We close at five."]
        for s in synth:
            far.audio(1, 1, s.seq)
            far.emit("tts", SentenceDone(call_id=1, turn_id=1, seq=s.seq, frames=2, duration_ms=40, first_audio_ns=1), 1, 1)
        await _settle(far)
        assert session.state is CallState.SPEAKING
        for name in port.marks[-2:]:
            session.on_mark(name, played=True)
        assert session.state is CallState.LISTENING
        last = session.conversation.entries[-1]
        assert last.role == "assistant" and last.content.startswith("We open at eight") and not last.interrupted

    _run(scenario)


async def _two_sentences_first_heard(session: CallSession, port: FakePort, far: FarEnd) -> list[Synthesize]:
    """Turn 1 answered in three sentences; the first played and heard, the second's audio sent."""
    await _finish_greeting(session, port, far)
    far.emit("stt", _turn_ended(1, "Where are you?"), 1, 1)
    await _settle(far)
    far.requests("llm")
    far.tokens(1, 1, "We are at 12 Maple Street. Parking is behind the building. Buses stop outside.")
    far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="stop"), 1, 1)
    await _settle(far)
    synth = [m for m in far.requests("tts") if isinstance(m, Synthesize)]
    far.audio(1, 1, 0)
    far.emit("tts", SentenceDone(call_id=1, turn_id=1, seq=0, frames=2, duration_ms=40, first_audio_ns=1), 1, 1)
    far.audio(1, 1, 1)
    await _settle(far)
    session.on_mark(port.marks[-1], played=True)  # the caller heard sentence 0 only
    return synth


def test_barge_in_clears_at_once_then_a_real_interruption_cancels_and_keeps_only_heard_text() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        synth = await _two_sentences_first_heard(session, port, far)
        played_before = len(port.played)
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=5000, detected_ns=1), 1, 2)
        await _settle(far)
        assert port.clears == 1  # the audio stops on the onset, before anyone knows what was said
        assert not [m for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, Cancel)]
        far.emit("stt", _turn_ended(2, "Sorry, is there parking?"), 1, 2)  # not a backchannel
        await _settle(far)
        cancels = {(type(m).__name__, m.turn_id) for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, Cancel)}
        assert cancels == {("Cancel", 1)}
        msg = [e for e in session.conversation.entries if e.role == "assistant"][-1]
        assert msg.interrupted and msg.content == "We are at 12 Maple Street."
        assert session.conversation.entries[-1].content == "Sorry, is there parking?"  # answered as today
        far.audio(1, 1, 2)  # stale audio of the cancelled turn must never be played
        await _settle(far)
        assert len(port.played) == played_before
        assert len(synth) == 3

    _run(scenario)


def test_caller_going_on_just_after_the_answer_began_is_one_turn_with_one_reply() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _two_sentences_first_heard(session, port, far)
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=700, detected_ns=1), 1, 2)
        await _settle(far)
        assert port.clears == 1
        far.emit("stt", _turn_ended(2, "And is there parking?", start_ms=700), 1, 2)  # 0.7 s into the answer
        await _settle(far)
        sent = {w: far.requests(w) for w in ("llm", "tts")}
        assert {m.turn_id for w in sent for m in sent[w] if isinstance(m, Cancel)} == {1}
        # The dropped answer is not in the history: one caller message with both parts, answered once.
        assert [e.role for e in session.conversation.entries] == ["assistant", "user"]
        assert session.conversation.entries[-1].content == "Where are you? And is there parking?"
        gen = [m for m in sent["llm"] if isinstance(m, Generate)]
        assert [g.turn_id for g in gen] == [2] and gen[0].messages[-1].content == "Where are you? And is there parking?"
        assert session.state is CallState.PROCESSING and session.barge_ins == 0 and session._went_on.merged == 1

    _run(scenario)


def test_caller_going_on_before_any_answer_is_heard_is_one_turn_but_a_cough_lets_it_play() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _finish_greeting(session, port, far)
        far.emit("stt", _turn_ended(1, "I need to cancel my appointment."), 1, 1)
        await _settle(far)
        far.requests("llm")
        assert session.state is CallState.PROCESSING
        # A cough while the agent thinks: held, then played once it proves to hold no words.
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=9000, detected_ns=1), 1, 2)
        far.tokens(1, 1, "Sure, I can cancel it.")
        far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="stop"), 1, 1)
        await _settle(far)
        far.audio(1, 1, 0)
        far.emit("tts", SentenceDone(call_id=1, turn_id=1, seq=0, frames=2, duration_ms=40, first_audio_ns=1), 1, 1)
        await _settle(far)
        played = len(port.played)
        far.emit("stt", _turn_ended(2, "", start_ms=9000), 1, 2)
        await _settle(far)
        assert len(port.played) == played + 1 and session.state is CallState.SPEAKING
        session.on_mark(port.marks[-1], played=True)
        assert session.state is CallState.LISTENING
        # Words before the answer was heard: it is dropped, the caller's turn goes on.
        far.emit("stt", _turn_ended(3, "I also want to book a new one.", start_ms=15000), 1, 3)
        await _settle(far)
        far.requests("llm")
        far.emit("stt", SpeechStarted(call_id=1, turn_id=4, media_ms=16000, detected_ns=1), 1, 4)
        await _settle(far)
        far.emit("stt", _turn_ended(4, "For Friday.", start_ms=16000), 1, 4)
        await _settle(far)
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert [g.turn_id for g in gen] == [4]
        assert gen[0].messages[-1].content == "I also want to book a new one. For Friday."
        assert [e.role for e in session.conversation.entries] == ["assistant", "user", "assistant", "user"]

    _run(scenario)


def test_backchannel_over_the_agent_resumes_from_the_unheard_sentence() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _two_sentences_first_heard(session, port, far)
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=5000, detected_ns=1), 1, 2)
        await _settle(far)
        assert port.clears == 1
        session.on_mark(port.marks[-1], played=False)  # ... the clear dropped what was queued
        far.emit("tts", SentenceDone(call_id=1, turn_id=1, seq=1, frames=2, duration_ms=40, first_audio_ns=1), 1, 1)
        far.audio(1, 1, 2)  # synthesis goes on while held: kept, not sent
        await _settle(far)
        played_before, marks_before = len(port.played), len(port.marks)
        far.emit("stt", _turn_ended(2, "Uh-huh."), 1, 2)
        await _settle(far)
        assert not [m for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, (Cancel, Generate))]
        # Resumed from sentence 1 (the one the caller stopped hearing): its audio and mark, then
        # sentence 2's audio so far; sentence 0 is not repeated.
        assert len(port.played) == played_before + 2 and len(port.marks) == marks_before + 1
        assert session.state is CallState.SPEAKING and session.conversation.entries[-1].role == "user"

    _run(scenario)


async def _held_over_sentence_one(session: CallSession, port: FakePort, far: FarEnd) -> None:
    """Turn 1's answer, sentence 0 heard, stopped by caller speech (turn 2) over sentence 1."""
    await _two_sentences_first_heard(session, port, far)
    far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=5000, detected_ns=1), 1, 2)
    await _settle(far)
    session.on_mark(port.marks[-1], played=False)
    far.emit("tts", SentenceDone(call_id=1, turn_id=1, seq=1, frames=2, duration_ms=40, first_audio_ns=1), 1, 1)
    await _settle(far)
    assert port.clears == 1


async def _caller_paused(far: FarEnd, text: str, silence_ms: int = 1200, logprob: float = -0.3) -> None:
    """Turn 2's pause transcript is in; the endpointer would wait `silence_ms` more."""
    far.emit("stt", SpeculativeFinal(call_id=1, turn_id=2, text=text, silence_ms=silence_ms, no_speech_prob=0.3,
                                     avg_logprob=logprob), 1, 2)
    await _settle(far)


@pytest.mark.parametrize(("text", "logprob"), [
    ("Uh-huh.", -0.3),
    ("And mm", -1.72),  # an espeak "mm-hmm" as tiny.en guessed it: no words (call.no_words_guess_logprob)
])
def test_a_backchannel_resumes_at_the_callers_pause_not_at_the_end_of_their_turn(text: str, logprob: float) -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _held_over_sentence_one(session, port, far)
        played_before = len(port.played)
        await _caller_paused(far, text, logprob=logprob)  # Smart Turn unsure: 1.2 s more to the turn's end
        assert len(port.played) == played_before + 1 and session.state is CallState.SPEAKING
        far.emit("stt", msgspec.structs.replace(_turn_ended(2, text), no_speech_prob=0.3, avg_logprob=logprob), 1, 2)
        await _settle(far)
        assert len(port.played) == played_before + 1  # the turn's end replays nothing
        assert not [m for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, (Cancel, Generate))]
        assert session._backchannel.resumed == 1 and session.conversation.entries[-1].role == "user"

    _run(scenario)


def test_a_start_broken_off_resumes_the_answer_when_the_turn_ends_not_at_its_pause() -> None:
    """ "I'd be..." (an espeak "I see." as tiny.en heard it, unsure of it): it trails, so at its
    pause the caller may be going on; when the turn ends with nothing more there is nothing to
    answer, and the answer resumes with no new LLM turn."""
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _held_over_sentence_one(session, port, far)
        played_before = len(port.played)
        await _caller_paused(far, "I'd be...", logprob=-1.17)
        assert len(port.played) == played_before  # trails: not resumed at the pause
        far.emit("stt", msgspec.structs.replace(_turn_ended(2, "I'd be..."), no_speech_prob=0.34, avg_logprob=-1.17),
                 1, 2)
        await _settle(far)
        assert len(port.played) == played_before + 1
        assert not [m for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, (Cancel, Generate))]
        assert session._backchannel.resumed == 1 and session.conversation.entries[-1].role == "user"

    _run(scenario)


def test_a_caller_going_on_after_an_okay_is_stopped_again_and_answered() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _held_over_sentence_one(session, port, far)
        played_before = len(port.played)
        await _caller_paused(far, "Okay,")
        assert len(port.played) == played_before  # a comma: about to go on, not resumed
        await _caller_paused(far, "Wait, what")
        assert len(port.played) == played_before  # words: judged when the turn ends
        far.emit("stt", SpeechResumed(call_id=1, turn_id=2), 1, 2)
        await _caller_paused(far, "Okay.", silence_ms=500)
        assert len(port.played) == played_before + 1 and port.clears == 1  # resumed at this pause
        far.emit("stt", SpeechResumed(call_id=1, turn_id=2), 1, 2)
        await _settle(far)
        assert port.clears == 2  # they went on: stopped again at once
        far.emit("stt", _turn_ended(2, "Okay. And is there parking on Sunday?"), 1, 2)
        await _settle(far)
        cancels = {m.turn_id for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, Cancel)}
        assert cancels == {1}
        assert session.conversation.entries[-1].content == "Okay. And is there parking on Sunday?"
        assert session._backchannel.resumed == 0

    _run(scenario)


async def _caller_paused_after_greeting(session: CallSession, port: FakePort, far: FarEnd, text: str) -> None:
    """The greeting heard, then the caller's first words and a pause: a speculative turn 1 starts."""
    await _finish_greeting(session, port, far)
    far.requests("llm")
    far.emit("stt", SpeculativeFinal(call_id=1, turn_id=1, text=text, silence_ms=400), 1, 1)
    await _settle(far)


def test_speculative_reply_is_held_until_the_turn_ends_with_the_same_words() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _caller_paused_after_greeting(session, port, far, "Where are you?")
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert len(gen) == 1 and gen[0].turn_id == 1 and gen[0].messages[-1].content == "Where are you?"
        assert session.conversation.entries[-1].role == "assistant"  # not in the history yet
        far.tokens(1, 1, "We are at 12 Maple Street.")
        far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="stop"), 1, 1)
        await _settle(far)
        far.audio(1, 1, 0)
        far.emit("tts", SentenceDone(call_id=1, turn_id=1, seq=0, frames=2, duration_ms=40, first_audio_ns=1), 1, 1)
        await _settle(far)
        played, marks = len(port.played), len(port.marks)
        assert session.state is CallState.LISTENING  # ready, and not a frame sent
        far.emit("stt", _turn_ended(1, "Where are you?"), 1, 1)
        await _settle(far)
        assert len(port.played) == played + 1 and len(port.marks) == marks + 1  # plays at once
        assert not [m for m in far.requests("llm") if isinstance(m, (Generate, Cancel))]  # no second request
        assert session.conversation.entries[-1].content == "Where are you?"

    _run(scenario)


def test_a_long_wait_is_prepared_for_only_once_it_is_nearly_over() -> None:
    """After a phone number the endpointer waits 1.2 s: offered at once, the transcript is not
    answered yet (the caller is likely to go on); offered again 400 ms before the wait runs out
    (`stt.vad.speculative_lead_ms`), the reply is prepared and plays when the turn ends."""
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _finish_greeting(session, port, far)
        far.requests("llm")
        number = "My number is 555-212-34."
        far.emit("stt", SpeculativeFinal(call_id=1, turn_id=1, text=number, silence_ms=1200, waited_ms=150), 1, 1)
        await _settle(far)
        assert not [m for m in far.requests("llm") if isinstance(m, Generate)]
        far.emit("stt", SpeculativeFinal(call_id=1, turn_id=1, text=number, silence_ms=1200, waited_ms=800), 1, 1)
        await _settle(far)
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert len(gen) == 1 and gen[0].turn_id == 1 and gen[0].messages[-1].content == number
        assert session._spec.started == 1 and session.state is CallState.LISTENING

    _run(scenario)


def test_a_speculative_request_offers_what_the_real_one_would() -> None:
    """The agent's system prompt, knowledge file and tools go with a speculative request too: a
    held reply stands in for the real one, and "put me through" must be able to transfer."""
    agent = CallInfo(call_sid="CA1", agent="billing", system_prompt="You are Billing.", knowledge="billing.toml",
                     transfer_number="+15550001111")

    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _caller_paused_after_greeting(session, port, far, "Can I talk to a person?")
        far.emit("stt", _turn_ended(1, "Can I talk to a person, please?"), 1, 1)  # other words: asked anew
        await _settle(far)
        speculative, real = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert (speculative.turn_id, real.turn_id) == (1, 2)
        for gen in (speculative, real):
            assert [t.name for t in gen.tools] == ["transfer_call"] and gen.knowledge == "billing.toml"
            assert (gen.messages[0].role, gen.messages[0].content) == ("system", "You are Billing.")

    _run(scenario, agent)


def test_a_tool_called_at_the_callers_pause_waits_for_the_turns_end() -> None:
    """A tool's POST cannot be taken back if the caller goes on: a speculative reply that calls one
    is dropped, and the turn is asked again (tools and all) once it has really ended."""
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _caller_paused_after_greeting(session, port, far, "Put me through, please.")
        far.tokens(1, 1, "Putting you through now.")
        far.emit("llm", ToolCall(call_id=1, turn_id=1, tool_call_id="t1", name="transfer_call"), 1, 1)
        await _settle(far)
        assert not session._tool_tasks, "a tool ran before the caller's turn ended"
        cancels = {(w, m.turn_id) for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, Cancel)}
        assert cancels == {("llm", 1), ("tts", 1)}
        far.emit("stt", _turn_ended(1, "Put me through, please."), 1, 1)
        await _settle(far)
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert [g.turn_id for g in gen] == [2] and [t.name for t in gen[0].tools] == ["transfer_call"]

    _run(scenario, CallInfo(call_sid="CA1", transfer_number="+15550001111"))


def test_speculative_reply_discarded_when_the_caller_goes_on() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _caller_paused_after_greeting(session, port, far, "I need to cancel.")
        far.tokens(1, 1, "Sure, I can cancel it.")
        far.audio(1, 1, 0)
        far.emit("stt", SpeechResumed(call_id=1, turn_id=1), 1, 1)
        await _settle(far)
        played = len(port.played)
        cancels = {(w, m.turn_id) for w in ("llm", "tts") for m in far.requests(w) if isinstance(m, Cancel)}
        assert cancels == {("llm", 1), ("tts", 1)}
        # The final still says turn 1 (it was on its way): answered as turn 2, the cancelled id never reused.
        far.emit("stt", _turn_ended(1, "I need to cancel. And book Friday instead."), 1, 1)
        await _settle(far)
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert [g.turn_id for g in gen] == [2] and gen[0].messages[-1].content.endswith("Friday instead.")
        far.audio(1, 1, 1)  # late audio of the discarded reply
        await _settle(far)
        assert len(port.played) == played  # nothing of it was ever sent

    _run(scenario)


def test_backchannel_while_speaking_is_not_a_turn() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _settle(far)
        far.audio(1, 0, 0)  # greeting audio playing
        await _settle(far)
        assert session.state is CallState.SPEAKING
        far.emit("stt", _turn_ended(1, "Mm-hm."), 1, 1)
        await _settle(far)
        assert not [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert session.state is CallState.SPEAKING

    _run(scenario)


def test_words_lost_with_stt_over_a_held_answer_end_it_and_ask_again() -> None:
    """The caller talks over the answer while the stt worker is dead: the new worker's SpeechStarted
    holds the answer, its TurnEnded is a fragment, so the answer ends and "say it again" plays
    (it used to stay on hold, silent, until the caller spoke again)."""
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _two_sentences_first_heard(session, port, far)
        session.deps.canned.missed_words.audio += FRAME * 3
        session.deps.canned.missed_words.ready = True
        session.deps.links.set_state("stt", WorkerState.RESTARTING)
        session.on_worker_status("stt", WorkerState.RESTARTING)
        for _ in range(20):  # 400 ms of caller sound nobody listened to
            session.missed.on_frame(True)
        session.deps.links.set_state("stt", WorkerState.READY)
        session.on_worker_status("stt", WorkerState.READY)
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=5000, detected_ns=1), 1, 2)
        await _settle(far)
        assert port.clears == 1 and session.reply is not None and session.reply.on_hold
        far.emit("stt", _turn_ended(2, "walk-ins?"), 1, 2)
        await _settle(far)
        assert port.played[-1] == FRAME * 3  # "Sorry, I missed that..."
        assert session.state is CallState.SPEAKING and session.reply is not None and not session.reply.on_hold
        assert any(isinstance(m, Cancel) for m in far.requests("llm")), "the held answer was not cancelled"

    _run(scenario)


def test_a_held_answer_whose_sound_died_with_stt_ends_and_the_caller_is_asked_again() -> None:
    """The caller talks over the answer (held: backchannel or not?), the stt worker dies and its
    successor hears nothing more: after the grace the answer ends and "say it again" plays (a soak
    found the call silent for 20 s: the ask was skipped because the held answer was "being said")."""
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _two_sentences_first_heard(session, port, far)
        session.deps.canned.missed_words.audio += FRAME * 3
        session.deps.canned.missed_words.ready = True
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=5000, detected_ns=1), 1, 2)
        await _settle(far)
        assert session.reply is not None and session.reply.on_hold
        session.deps.links.set_state("stt", WorkerState.RESTARTING)
        session.on_worker_status("stt", WorkerState.RESTARTING)
        session.deps.links.set_state("stt", WorkerState.READY)
        session.on_worker_status("stt", WorkerState.READY)
        for _ in range(60):  # the grace (0.8 s), the caller quiet
            await asyncio.sleep(0.025)
            if port.played and port.played[-1] == FRAME * 3:
                break
        assert port.played[-1] == FRAME * 3, "the caller was not asked to repeat"
        assert session.reply is not None and not session.reply.on_hold and session.state is CallState.SPEAKING
        assert any(isinstance(m, Cancel) for m in far.requests("llm")), "the held answer was not cancelled"

    _run(scenario)


async def _stop_talking_to_a_stopped_stt(session: CallSession, port: FakePort) -> bool:
    """The caller's last loud frames, then quiet frames in real time, the stt worker reading none:
    True once "One moment." (the only clip of LOUD frames here) was played, within 2 s."""
    clip = session.deps.canned.wait_filler
    clip.audio += LOUD * 2
    clip.ready = True
    for seq in range(10):
        session.on_media(LOUD, seq, 10_000 + seq * 20, time.monotonic_ns())
    for seq in range(10, 110):
        session.on_media(FRAME, seq, 10_000 + seq * 20, time.monotonic_ns())
        if port.played and port.played[-1] == LOUD * 2:
            return True
        await asyncio.sleep(0.02)
    return False


def test_a_caller_waiting_on_a_stopped_stt_worker_hears_the_filler_over_a_held_reply() -> None:
    """A reply held for the caller's turn to end (here a speculative one) is silent: when the stt
    worker stops reading as the caller finishes, the caller hears "One moment." as with no reply
    (a soak found 2.3-3.4 s of silence there); an answer being heard gets none."""
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _finish_greeting(session, port, far)
        far.requests("stt")
        far.emit("stt", SpeculativeFinal(call_id=1, turn_id=1, text="Where are you?", silence_ms=400), 1, 1)
        await _settle(far)
        assert session.reply is not None and session.reply.on_hold
        assert await _stop_talking_to_a_stopped_stt(session, port)
        assert session.reply is not None and session.reply.on_hold  # the held reply is untouched

    async def speaking(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _two_sentences_first_heard(session, port, far)
        far.requests("stt")
        assert session.state is CallState.SPEAKING and not session.reply.on_hold  # type: ignore[union-attr]
        assert not await _stop_talking_to_a_stopped_stt(session, port)

    _run(scenario)
    _run(speaking)


def test_llm_worker_dying_mid_turn_gets_the_apology() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _finish_greeting(session, port, far)
        session.deps.canned.apology.audio += FRAME * 3
        session.deps.canned.apology.ready = True
        far.emit("stt", _turn_ended(1, "Can I book for Monday?"), 1, 1)
        await _settle(far)
        before = len(port.played)
        session.deps.links.set_state("llm", WorkerState.RESTARTING)
        session.on_worker_status("llm", WorkerState.RESTARTING)
        assert len(port.played) == before + 1 and port.played[-1] == FRAME * 3
        session.on_mark(port.marks[-1], played=True)
        assert session.state is CallState.LISTENING and session.fallbacks == 1

    _run(scenario)

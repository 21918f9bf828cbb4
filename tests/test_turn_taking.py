"""Turn-taking end to end on the embedded default, all real (supervisor, workers, models, rings,
server, a simulated Twilio caller): speculative replies, backchannels and noise over the agent.
The agent's audio is transcribed back with tiny.en.

One system serves the module. Its end-of-turn waits are stretched to 1 s (and the speculative
limit with them) so that a caller's 0.7 s pause reliably falls between the speculative final and
the end of the turn on a loaded machine; the rules themselves are tested in test_smart_turn.py.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from tests.running_system import RunningSystem
from voicecall.sim.client import CallReport, CallScript, SimulatedCall, Utterance
from voicecall.sim.speech import normalize_words, transcribe_mulaw, utterance
from voicecall.sim.turn_callers import line, wordless_burst

pytestmark = pytest.mark.slow

HOURS = ("We're open Monday to Friday from eight in the morning to six in the evening, and on Saturday "
         "from nine to one. We're closed on Sundays and public holidays.")

STRETCHED = {"silence_ms_confident": 1000, "silence_ms_question": 1000, "silence_ms": 1000, "silence_ms_neutral": 1000,
             "silence_ms_unpunctuated": 1000, "silence_ms_question_disputed": 1000,
             "silence_ms_incomplete": 1400, "silence_ms_max": 2000, "speculative_max_silence_ms": 1000}


def _stretched(text: str) -> str:
    for key, value in STRETCHED.items():  # edit the keys in place: TOML forbids a section twice
        found = [ln for ln in text.splitlines() if ln.split("=")[0].strip() == key]
        assert len(found) == 1, key
        text = text.replace(found[0], f"{key} = {value}")
    return text


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory):
    s = RunningSystem(tmp_path_factory.mktemp("turns"), edit=_stretched)
    with s.serving():
        yield s


def _record(system: RunningSystem, call_sid: str) -> tuple[dict, list[dict], list[dict]]:
    from voicecall.storage.engine import connect

    call, turns = system.finished_call(call_sid, timeout_s=5.0)
    db = connect(f"sqlite:///{system.db}", readonly=True)
    try:
        events = db.query("SELECT kind, detail FROM call_events WHERE call_id = ? ORDER BY id", (call["id"],))
    finally:
        db.close()
    return call, turns, events


def _heard(call: SimulatedCall, after_ns: int = 0, before_ns: int = 2**63) -> str:
    audio = b"".join(a for start, a in call.buffer.segments if after_ns <= start < before_ns)
    text = transcribe_mulaw(audio)
    print(f"caller heard: {text!r}")
    return text


def _metric(system: RunningSystem, sample: str) -> float:
    with urllib.request.urlopen(f"{system.url}/metrics", timeout=5) as resp:
        for row in resp.read().decode().splitlines():
            if row.startswith(sample + " "):
                return float(row.split()[-1])
    return 0.0


def test_speculative_turn_discarded_when_the_caller_resumes(system: RunningSystem) -> None:
    said = line("paused", "The appointment is for my husband. | He has a bad cough.", pause_ms=700)

    async def main() -> tuple[SimulatedCall, int]:
        call = SimulatedCall(system.url)
        assert await call.place() == 200
        await call.connect()
        await call.silence(4500)  # the greeting
        start, _ = await call.stream_audio(said.mulaw)
        await call.silence(6000)
        await call.stop()
        await call.close()
        return call, start

    call, start_ns = asyncio.run(main())
    assert not call.report.protocol_errors, call.report.protocol_errors
    # Not a frame of the reply prepared at the pause reached the caller: nothing played before
    # the caller's (second) speech ended.
    speech_end_ns = start_ns + said.speech_end_ms * 1_000_000
    early = [(s - start_ns) / 1e6 for s, _ in call.buffer.segments if start_ns <= s < speech_end_ns]
    assert not early, f"audio played {early} ms into the caller's speech"
    _rec, turns, events = _record(system, call.report.call_sid)
    print(events)
    callers = [t["text"].lower() for t in turns if t["role"] == "caller"]
    assert len(callers) == 1 and "husband" in callers[0] and "cough" in callers[0], callers  # one turn
    assert len([t for t in turns if t["role"] == "agent"]) == 1
    details = [e["detail"] for e in events if e["kind"] == "speculative"]
    assert any(d.startswith("discarded") and "went on" in d for d in details), details  # LLM + TTS cancelled
    assert any(d.startswith("used") for d in details), details  # the whole sentence's was ready at its end
    assert _metric(system, 'voicecall_speculative_turns_total{outcome="discarded"}') >= 1
    assert _metric(system, 'voicecall_speculative_turns_total{outcome="started"}') >= 2


def _talked_over(system: RunningSystem, sound: bytes) -> tuple[SimulatedCall, CallReport, dict, list, list]:
    question = utterance("What are your opening hours?")

    async def main() -> tuple[SimulatedCall, CallReport]:
        call = SimulatedCall(system.url)
        report = await call.run(CallScript(utterances=[Utterance(mulaw=question.mulaw, pause_before_ms=4500),
                                                       Utterance(mulaw=sound, barge_in_after_ms=1500)],
                                           tail_ms=12000))
        return call, report

    call, report = asyncio.run(main())
    assert not report.protocol_errors, report.protocol_errors
    assert report.barge_in_stop_ms, "the agent's audio did not stop when the caller made a sound"
    print(f"audio stopped {report.barge_in_stop_ms[0]:.0f} ms after the onset")
    rec, turns, events = _record(system, report.call_sid)
    return call, report, rec, turns, events


def _assert_resumed(call: SimulatedCall, rec: dict, turns: list, events: list) -> None:
    callers = [t["text"] for t in turns if t["role"] == "caller"]
    agents = [t for t in turns if t["role"] == "agent"]
    assert len(callers) == 1 and "hours" in callers[0].lower(), callers  # the sound was not a turn
    assert len(agents) == 1 and agents[0]["interrupted"] == 0, agents
    assert agents[0]["heard_text"] == HOURS, agents[0]
    assert [e["kind"] for e in events].count("backchannel") == 1, events
    assert rec["barge_ins"] == 0
    # The whole answer reached the caller's ear: the phrases played before the `clear` (up to the
    # one the sound cut), then the rest from the start of that phrase (transcribed apart: Whisper
    # loses its way on a phrase heard twice in a row).
    cut = call.clear_ns[-1]
    heard = set(normalize_words(_heard(call, call.first_audio_ns[1], cut) + " " + _heard(call, cut)))
    missing = set(normalize_words(HOURS)) - heard
    # tiny.en hears this voice's "from eight" as "for May 10" about one run in two: a few small
    # words may go, but every phrase must be there, the cut one included.
    assert len(missing) <= 3, f"not heard: {missing}"
    # Stems: the test's own tiny.en once wrote "public holiday." for the agent's "public holidays".
    stems = {w.removesuffix("s") for w in heard}
    assert {"open", "monday", "friday", "morning", "evening", "saturday", "sunday", "holiday"} <= stems, heard


def test_backchannel_resumes_and_the_whole_answer_is_heard(system: RunningSystem) -> None:
    call, _report, rec, turns, events = _talked_over(system, utterance("Uh-huh.", lead_ms=0, trail_ms=600).mulaw)
    _assert_resumed(call, rec, turns, events)


def test_a_noise_burst_resumes(system: RunningSystem) -> None:
    call, _report, rec, turns, events = _talked_over(system, wordless_burst(seed=3, parts=6, trail_ms=600))
    _assert_resumed(call, rec, turns, events)
    assert _metric(system, "voicecall_backchannels_total") >= 2


def test_an_echoing_line_neither_stops_the_agent_nor_hides_a_real_interruption(system: RunningSystem) -> None:
    """The caller's line sends the agent's audio back (25 dB down, 60 ms later): the greeting and the
    answer play on (the stt worker's echo gate takes that sound for the echo it is), and a real
    interruption over the echoing answer still stops it."""
    from voicecall.sim.phone_line import PhoneLine

    question = utterance("What are your opening hours?")
    interruption = utterance("Actually, can I talk to a person?", lead_ms=0, trail_ms=600)
    ignored_before = _metric(system, "voicecall_echo_onsets_ignored_total")

    async def main() -> tuple[SimulatedCall, CallReport]:
        call = SimulatedCall(system.url, line=PhoneLine(echo_db=-25.0, echo_delay_ms=60))
        report = await call.run(CallScript(utterances=[Utterance(mulaw=question.mulaw, pause_before_ms=4500),
                                                       Utterance(mulaw=interruption.mulaw, barge_in_after_ms=2500)],
                                           tail_ms=8000))
        return call, report

    call, report = asyncio.run(main())
    assert not report.protocol_errors, report.protocol_errors
    rec, turns, events = _record(system, report.call_sid)
    print(events)
    talked_at = call.first_audio_ns[1] + 2500 * 1_000_000  # [0]: the greeting, [1]: the answer; 2.5 s into it
    early = [round((t - talked_at) / 1e6) for t in call.clear_ns if t < talked_at]
    assert not early, f"the agent stopped {early} ms before the caller interrupted: for its own echo"
    assert report.barge_in_stop_ms and report.barge_in_stop_ms[0] < 1000, report.barge_in_stop_ms
    print(f"the interruption stopped the answer {report.barge_in_stop_ms[0]:.0f} ms after its onset")
    callers = [t["text"].lower() for t in turns if t["role"] == "caller"]
    assert len(callers) == 2 and "hours" in callers[0] and "person" in callers[1], callers
    assert rec["barge_ins"] == 1
    echoes = [e for e in events if e["kind"] == "echo"]
    assert echoes, events  # the echo was heard, and set aside
    assert _metric(system, "voicecall_echo_onsets_ignored_total") > ignored_before

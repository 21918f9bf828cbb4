"""The simulator CLI end to end: WAV in, barge-in, DTMF, WAV out, percentiles, CPU sampling."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import numpy as np

from ipc.audio import read_wav_mulaw, ulaw_decode, write_mulaw_wav
from tests.telephony_fixtures import config, running_server
from voicecall.cli import simcall


def _args(server: str, **over: object) -> argparse.Namespace:
    args = simcall.build_parser().parse_args(["--server", server])
    fast = dict(tone_ms=500, pause_ms=100, tail_ms=1200, ramp_s=0.0, settle_s=0.2, measure_s=0.5)
    vars(args).update({**fast, **over})
    return args


def test_one_call_with_wav_barge_in_and_dtmf(tmp_path: Path) -> None:
    wav = tmp_path / "caller.wav"
    write_mulaw_wav(wav, simcall.tone_mulaw(600, 300.0))
    out = tmp_path / "heard.wav"

    async def main() -> dict:
        async with running_server(config()) as (url, _):
            return await simcall.run_calls(_args(url, wav=str(wav), barge_in_after_ms=200, dtmf="50:4", out=str(out)))

    report = asyncio.run(main())
    assert report["protocol_errors"] == []
    assert len(report["response_ms"]) == 2 and all(250 <= ms <= 600 for ms in report["response_ms"])
    assert len(report["barge_in_stop_ms"]) == 1 and report["barge_in_stop_ms"][0] < 250
    assert report["clears"] == 1
    heard = ulaw_decode(read_wav_mulaw(out)).astype(np.float64)
    assert np.sqrt(np.mean(heard**2)) > 300  # the echo of the caller's tone reached the "caller"


def test_many_calls_report_percentiles_and_cpu() -> None:
    async def main() -> dict:
        async with running_server(config()) as (url, _):
            return await simcall.run_calls(_args(url, calls=5, ramp_s=0.2, cpu_pid=os.getpid(), tick_ms=40))

    report = asyncio.run(main())
    assert report["calls"] == 5 and report["calls_with_errors"] == 0
    assert report["response_ms"]["n"] == 5
    cpu = report["cpu"]
    assert cpu["live_calls"] == 5 and cpu["messages_per_s"] > 0  # measured while all five streamed
    assert 0 < cpu["cpu_core_fraction"] <= (os.cpu_count() or 1)  # this process served them: it used CPU
    assert abs(cpu["cpu_percent_per_call"] - 100 * cpu["cpu_core_fraction"] / 5) < 0.01  # shared out per live call


def test_the_telephone_band_passes_the_voice_band_and_drops_a_voice_fundamental() -> None:
    """`--band`: 300-3400 Hz at -3 dB, the voice band flat, a 100 Hz fundamental and a 3.8 kHz
    sibilant ~38 dB down; frame by frame (a live call) the same as all at once."""
    from ipc.audio import FRAME_BYTES, ulaw_encode
    from voicecall.sim.phone_line import PhoneBand, PhoneLine, phone_line

    t = np.arange(16000) / 8000

    def gain_db(hz: float) -> float:
        x = np.sin(2 * np.pi * hz * t)
        y = PhoneBand().filter(x)[8000:]  # past the start-up transient
        return float(20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(0.5)))

    assert abs(gain_db(300)) - 3 < 0.2 and abs(gain_db(3400)) - 3 < 0.2
    assert all(abs(gain_db(hz)) < 0.3 for hz in (500, 1000, 2000, 3000))
    assert gain_db(100) < -35 and gain_db(3800) < -35
    voice = ulaw_encode((6000 * np.sin(2 * np.pi * 120 * t) + 3000 * np.sin(2 * np.pi * 1200 * t)).astype(np.int16))
    line = PhoneLine(band=True)
    framed = b"".join(line.mix(voice[i : i + FRAME_BYTES]) for i in range(0, len(voice), FRAME_BYTES))
    assert framed == PhoneLine(band=True).mix(voice) != voice
    assert phone_line(None, 0.0, seed=0) is None and phone_line(None, 0.0, seed=0, band=True) is not None


def test_phone_line_noise_sits_at_its_level_under_every_frame_and_is_continuous() -> None:
    from ipc.audio import FRAME_BYTES, ULAW_SILENCE, ulaw_encode
    from voicecall.sim.phone_line import PhoneLine

    silence = bytes([ULAW_SILENCE]) * FRAME_BYTES * 50  # 1 s
    pcm = ulaw_decode(PhoneLine(-45.0, seed=3).mix(silence)).astype(np.float64)
    level = 10 * np.log10(np.mean((pcm / 32768.0) ** 2))
    assert abs(level - -45.0) < 1.0, level
    # frame by frame (as a live call sends it) is the same noise as all at once: no clicks at frame edges
    line = PhoneLine(-45.0, seed=3)
    framed = b"".join(line.mix(silence[i : i + FRAME_BYTES]) for i in range(0, len(silence), FRAME_BYTES))
    assert framed == PhoneLine(-45.0, seed=3).mix(silence)
    # a quiet caller: the speech 20 dB down, the silence between still digital silence
    tone = ulaw_encode((8000 * np.sin(np.arange(1600) * 0.3)).astype(np.int16))
    quiet = ulaw_decode(PhoneLine(level_db=-20.0).mix(tone + silence[:320])).astype(np.float64)
    ratio = np.sqrt(np.mean(quiet[:1600] ** 2) / np.mean(ulaw_decode(tone).astype(np.float64) ** 2))
    assert abs(20 * np.log10(ratio) - -20.0) < 0.5 and not quiet[1600:].any()
    for bad, message in (({"noise_dbfs": -10.0}, "-10 dBFS is outside -70..-20"), ({"level_db": 12.0}, "12 dB is outside -40..6")):
        try:
            PhoneLine(**bad)
        except ValueError as e:
            assert message in str(e), str(e)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_turn_bench_counts_as_joined_only_the_talked_over_lines_that_became_one_turn() -> None:
    from voicecall.cli.turn_bench import Item, _joined
    from voicecall.sim.turn_callers import CallerLine

    def item(kind: str, text: str, talked_over: bool) -> Item:
        return Item(kind, CallerLine(kind, text, "piper", b"", 0, 0), result={"talked_over": talked_over})

    items = [item("paused", "My son needs a vaccine. Do you have any slots this week?", True),
             item("paused", "The pain started on Tuesday and it has not gone away.", True),
             item("backchannel", "Mm-hmm.", False)]
    turns = [{"role": "caller", "turn_id": 5, "text": "My son needs a vaccine. Do you have any slots this week?"},
             {"role": "caller", "turn_id": 9, "text": "What are your opening hours?"},  # after a misjudged "mm-hmm"
             {"role": "caller", "turn_id": 12, "text": "The veins are done to the end."},
             {"role": "caller", "turn_id": 15, "text": "the paint started on to the end So now it's done away."}]
    events = [{"kind": "went_on", "detail": "turn 4 went on as turn 5"}, {"kind": "went_on", "detail": "turn 8 went on as turn 9"},
              {"kind": "backchannel", "detail": "resumed"}]
    assert _joined(items, turns, events) == 1  # the second line was not joined; the "hours" join is no line's
    events.append({"kind": "went_on", "detail": "turn 14 went on as turn 15"})  # now it is, heard badly
    assert _joined(items, turns, events) == 2


def test_turn_bench_ties_each_resume_to_the_stop_before_it() -> None:
    from voicecall.cli.turn_bench import _stops

    def stop(ms: int) -> dict:
        return {"kind": "barge_in_stop", "detail": f'{{"onset_media_ms": {ms}, "detect_ms": 160.0, "deliver_ms": 0.3}}'}

    # a backchannel resumed, then a real interruption taken for one (2026-12-06: "Wait, is that on
    # Tuesday or Thursday?" heard "Wait, I'm going to make harder." at no-speech 0.70), then one answered
    events = [{"kind": "endpoint", "detail": "{}"}, {"kind": "backchannel", "detail": "before any stop"},
              stop(41556), {"kind": "backchannel", "detail": "Mm-mm."},
              stop(56180), {"kind": "endpoint", "detail": "{}"}, {"kind": "backchannel", "detail": "Wait, I'm going..."},
              stop(117492), {"kind": "endpoint", "detail": "{}"}]
    assert [(d["onset_media_ms"], resumed) for d, resumed in _stops(events)] == [
        (41556, True), (56180, True), (117492, False)]


def test_an_echoing_line_sends_back_what_the_caller_heard_delayed_and_down() -> None:
    import pytest

    from ipc.audio import FRAME_BYTES, ULAW_SILENCE, ulaw_encode
    from voicecall.sim.phone_line import PhoneLine
    from voicecall.sim.playback import TwilioBuffer

    async def echo_mark(name: str) -> None:
        return None

    async def main() -> None:
        buffer = TwilioBuffer(echo_mark)
        tone = ulaw_encode((8000 * np.sin(np.arange(800) * 0.3)).astype(np.int16))  # 100 ms
        buffer.media(tone, now_ns=1_000_000_000)
        ms = 1_000_000
        assert buffer.played(1_000 * ms, 800) == tone
        assert buffer.played(950 * ms, 800) == bytes([ULAW_SILENCE]) * 400 + tone[:400]  # before it: silence
        assert buffer.played(1_080 * ms, 320) == tone[640:] + bytes([ULAW_SILENCE]) * 160
        buffer.clear(1_050 * ms)  # the caller heard its first half only
        assert buffer.played(1_040 * ms, 160) == tone[320:400] + bytes([ULAW_SILENCE]) * 80

        line = PhoneLine(echo_db=-20.0)
        frame = bytes([ULAW_SILENCE]) * FRAME_BYTES
        back = ulaw_decode(line.mix(frame, tone[:FRAME_BYTES])).astype(np.float64)
        level = 20 * np.log10(np.sqrt(np.mean(back**2) / np.mean(ulaw_decode(tone[:FRAME_BYTES]).astype(np.float64) ** 2)))
        assert abs(level - -20.0) < 0.5, level
        assert line.mix(frame, None) == frame and PhoneLine().mix(frame, tone[:FRAME_BYTES]) == frame  # no echo set
        with pytest.raises(ValueError, match="echo of -3 dB is outside -70..-6 dB"):
            PhoneLine(echo_db=-3.0)
        with pytest.raises(ValueError, match="echo delay of 900 ms is outside 0..500 ms"):
            PhoneLine(echo_db=-30.0, echo_delay_ms=900)

    asyncio.run(main())


def test_the_server_hears_its_own_voice_on_an_echoing_line(tmp_path: Path) -> None:
    """The echo handler repeats the caller's tone; on an echoing line that repeat comes back to it
    as caller audio and it stops itself (`clear`): the echo is on the wire, 30 ms after playout."""
    wav = tmp_path / "caller.wav"
    write_mulaw_wav(wav, simcall.tone_mulaw(800, 300.0))

    async def main(**line: object) -> dict:
        async with running_server(config()) as (url, _):
            return await simcall.run_calls(_args(url, wav=str(wav), tail_ms=2000, **line))

    clean = asyncio.run(main())
    echoing = asyncio.run(main(echo_db=-12.0, echo_delay_ms=30))
    assert clean["protocol_errors"] == [] and echoing["protocol_errors"] == []
    assert clean["clears"] == 0, clean
    assert echoing["clears"] >= 1, echoing

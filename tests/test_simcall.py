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

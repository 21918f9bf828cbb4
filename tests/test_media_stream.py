"""Media Streams end to end on a real socket: the message sequence, pacing, marks, clear, bad input, load."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np

from ipc.audio import SAMPLE_RATE, pcm_to_mulaw_8k
from tests.telephony_fixtures import RecordingHandler, config, running_server
from tests.waiting import wait_until_async
from voicecall.sim.client import CallScript, SimulatedCall, Utterance
from voicecall.sim.echo import EchoHandler
from voicecall.twilio.media_stream import MarkState, MediaStream
from voicecall.twilio.protocol import OutClear, OutMark, OutMedia, Start

LEAD_MS = 200


def tone(ms: int, freq: float = 440.0) -> bytes:
    t = np.arange(SAMPLE_RATE * ms // 1000) / SAMPLE_RATE
    return pcm_to_mulaw_8k(0.3 * np.sin(2 * np.pi * freq * t), SAMPLE_RATE)


class Speaker(RecordingHandler):
    """Talks on start: 160 ms + mark m1, 2 s + mark m2. DTMF 1 clears, DTMF 2 says 100 ms + m3."""

    def on_start(self, stream: MediaStream, start: Start) -> None:
        super().on_start(stream, start)
        stream.play(tone(160), turn_id=1)
        self.m1 = stream.mark("m1")
        stream.play(tone(2000))
        self.m2 = stream.mark("m2")

    def on_dtmf(self, digit: str) -> None:
        super().on_dtmf(digit)
        assert self.stream is not None
        if digit == "1":
            self.cleared = self.stream.clear()
        elif digit == "2":
            self.stream.play(tone(90))  # not a whole frame: padded before the mark
            self.m3 = self.stream.mark("m3")


def test_sequence_pacing_marks_and_clear() -> None:
    RecordingHandler.instances.clear()

    async def main() -> None:
        async with running_server(config(playout_lead_ms=LEAD_MS), factory=Speaker) as (url, _):
            call = SimulatedCall(url)
            assert await call.place() == 200
            await call.connect()
            await asyncio.wait_for(call.server_audio.wait(), 2)
            handler = RecordingHandler.instances[-1]
            assert isinstance(handler, Speaker)
            await wait_until_async(lambda: any(isinstance(m, OutMark) for m in call.received), 2, "m1 at the caller")
            await call.send_dtmf("1")  # m1 is at "Twilio" (within the lead, unplayed), m2 still queued at the server
            await wait_until_async(lambda: len(handler.marks) == 2, 2, "the clear to drop m2 here and m1 at the caller")
            await call.send_dtmf("2")
            await wait_until_async(lambda: len(handler.marks) == 3, 2, "m3 to be played")
            await call.send_frame(tone(20))
            await call.stop()
            await call.close()
            stream = handler.stream
            assert stream is not None and handler.closed == ["stop"]
            assert handler.digits == ["1", "2"]
            assert handler.m1.state is MarkState.DROPPED  # echoed by Twilio after clear: not heard
            assert handler.m2.state is MarkState.DROPPED and handler.m2.sent_ns == 0  # never left our queue
            assert handler.m3.state is MarkState.PLAYED
            assert [m.name for m in handler.marks] == ["m2", "m1", "m3"]  # local drop first, then echoes
            assert handler.cleared > 50
            assert (stream.first_sent_ns(1) or 0) > 0
            assert len(handler.frames) == 1 and handler.frames[0][1] == 1  # chunk 1
            report = call.report
            assert report.protocol_errors == []
            assert report.max_buffered_ms <= LEAD_MS + 25  # never more than the lead ahead
            kinds = [type(m).__name__ for m in call.received]
            first_clear = kinds.index("OutClear")
            assert "OutMark" in kinds[:first_clear]  # m1 went out before the clear
            assert all(isinstance(m, OutMedia | OutMark | OutClear) for m in call.received)
            assert [m["name"] for m in report.marks] == ["m1", "m3"]
            assert [m["dropped"] for m in report.marks] == [True, False]
            # audio after the clear: 90 ms padded to 100 ms = 5 frames, then m3
            after = call.received[first_clear + 1 :]
            assert [type(m).__name__ for m in after] == ["OutMedia"] * 5 + ["OutMark"]

    asyncio.run(main())


def test_pacing_sends_real_time_after_the_lead() -> None:
    RecordingHandler.instances.clear()

    class Talker(RecordingHandler):
        def on_start(self, stream: MediaStream, start: Start) -> None:
            super().on_start(stream, start)
            stream.play(tone(1000))
            self.done = stream.mark("end")

    async def main() -> None:
        async with running_server(config(playout_lead_ms=LEAD_MS), factory=Talker) as (url, _):
            call = SimulatedCall(url)
            await call.place()
            t0 = time.monotonic_ns()
            await call.connect()
            await wait_until_async(lambda: call.buffer.marks, 3, "the end mark at the caller")
            handler = RecordingHandler.instances[-1]
            sent_s = (call.buffer.marks[0].received_ns - t0) / 1e9
            assert 0.7 <= sent_s <= 1.2, sent_s  # 1 s of audio, sent at most 200 ms ahead
            assert await asyncio.wait_for(handler.done.wait(), 2)  # echoed once "played"
            assert handler.done.done_ns - handler.done.queued_ns >= 0.95e9
            await call.stop()
            await call.close()
            assert len([m for m in call.received if isinstance(m, OutMedia)]) == 50

    asyncio.run(main())


class KeepStream(EchoHandler):
    kept: list[KeepStream] = []

    def on_start(self, stream: MediaStream, start: Start) -> None:
        super().on_start(stream, start)
        self.kept_stream = stream
        KeepStream.kept.append(self)


def test_bad_input_never_hurts_the_call_or_its_neighbours() -> None:
    KeepStream.kept.clear()
    frame = tone(20)

    async def main() -> None:
        async with running_server(config(playout_lead_ms=LEAD_MS), factory=KeepStream) as (url, app):
            healthy = SimulatedCall(url)
            script = CallScript([Utterance(mulaw=tone(400), pause_before_ms=100)], tail_ms=900)
            healthy_task = asyncio.create_task(healthy.run(script))

            bad = SimulatedCall(url)
            await bad.place()
            await bad.connect(start=False)
            await bad.send_frame(frame)  # media before start
            await bad.send_start()
            await bad.send_text("this is not json")
            await bad.send_text('{"event": "transcription", "streamSid": "x"}')  # unknown: no-op
            await bad.send_json({"event": "media", "streamSid": bad.stream_sid, "media": {"chunk": "9"}})
            await bad.send_json({"event": "media", "streamSid": bad.stream_sid, "media": {"payload": "!!not base64!!"}})
            await bad.send_json({"event": "media", "streamSid": bad.stream_sid,
                                 "media": {"payload": base64.b64encode(b"\xff" * 100).decode(), "timestamp": "40"}})
            await bad.send_json({"event": "media", "streamSid": bad.stream_sid,  # a chunk number past u32
                                 "media": {"payload": base64.b64encode(frame).decode(), "chunk": str(2**40)}})
            await bad.send_frame(frame, stream_sid="MZ" + "f" * 32)  # wrong streamSid
            await bad.send_start(stream_sid="MZ" + "e" * 32)  # a second start
            await bad.send_json({"event": "dtmf", "streamSid": bad.stream_sid, "dtmf": {"digit": "x"}})
            await bad.send_json({"event": "mark", "streamSid": bad.stream_sid, "mark": {"name": "never-sent"}})
            assert bad.ws is not None
            await bad.ws.send(b"\x00\x01")  # binary frame
            await bad.send_frame(frame)
            await bad.send_dtmf("7")
            await bad.stop()
            await bad.close()

            vanisher = SimulatedCall(url)
            await vanisher.place()
            await vanisher.connect()
            await vanisher.send_frame(frame)
            await vanisher.vanish()  # no stop, no close frame

            report = await healthy_task
            assert report.protocol_errors == [] and report.response_ms, report
            await wait_until_async(lambda: len([k for k in KeepStream.kept if k.close_reason]) == 3, 2,
                                   "the three streams to close")

        by_sid = {k.kept_stream.stream_sid: k for k in KeepStream.kept}
        b = by_sid[bad.stream_sid]
        stats = b.kept_stream.stats
        assert b.close_reason == "stop" and b.digits == ["7"]
        assert stats.unknown_events == 1
        assert stats.frames_in == 2 and stats.odd_frames_in == 1  # the 100-byte payload is accepted
        assert stats.protocol_errors == 10, list(stats.errors)
        assert b.kept_stream.last_media_ms == 60  # chunk-2 timestamps kept: 20 + 20*2
        v = by_sid[vanisher.stream_sid]
        assert v.close_reason and v.close_reason != "stop"
        assert by_sid[healthy.stream_sid].echoes == 1

    asyncio.run(main())


def test_fifty_concurrent_streams() -> None:
    async def main() -> None:
        async with running_server(config(max_calls=64), factory=EchoHandler) as (url, _):
            script = CallScript([Utterance(mulaw=tone(400), pause_before_ms=100)], tail_ms=1200)
            calls = [SimulatedCall(url, tick_ms=40) for _ in range(50)]
            reports = await asyncio.gather(*(c.run(script) for c in calls))
            assert all(r.protocol_errors == [] for r in reports), [r.protocol_errors for r in reports if r.protocol_errors]
            assert all(len(r.response_ms) == 1 for r in reports)
            assert all(r.marks and not r.marks[0]["dropped"] for r in reports)
            assert len({r.stream_sid for r in reports}) == 50

    asyncio.run(main())


def _closed(i: int) -> list[str]:
    """What ended the i-th stream ([] while it is open, or before the server accepted it)."""
    handlers = RecordingHandler.instances
    return handlers[i].closed if len(handlers) > i else []


def test_idle_oversize_and_shutdown_end_streams_cleanly() -> None:
    RecordingHandler.instances.clear()

    async def main() -> None:
        async with running_server(config(idle_timeout_s=0.3, max_ws_message_bytes=4096),
                                  factory=RecordingHandler) as (url, _):
            quiet = SimulatedCall(url)
            await quiet.place()
            await quiet.connect()  # and says nothing: idle timeout
            await wait_until_async(lambda: _closed(0), 3, "the quiet stream to time out")
            await quiet.close()
            big = SimulatedCall(url)
            await big.place()
            await big.connect()
            await big.send_text('{"event": "media", "pad": "' + "x" * 8000 + '"}')  # over the limit
            await wait_until_async(lambda: _closed(1), 3, "the oversized message to end its stream")
            await big.close()
            live = SimulatedCall(url)
            await live.place()
            await live.connect()
            await live.send_frame(tone(20))
            handlers = RecordingHandler.instances
            await wait_until_async(lambda: len(handlers) == 3 and handlers[2].frames, 3, "the live stream's first frame")
            t0 = time.monotonic()
        # leaving the context shut the server down with `live` still connected
        assert time.monotonic() - t0 < 3.0
        await live.close()
        reasons = [h.closed for h in RecordingHandler.instances]
        assert reasons[0] == ["idle timeout"]
        assert reasons[1] and reasons[1][0] != "stop"
        assert reasons[2] == ["server shutting down"]
        assert live.report.closed_by.startswith("server (1000)")

    asyncio.run(main())

"""WaitFiller: "One moment." when an answer is late, from its two clocks (no processes needed)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from ipc.audio import ulaw_encode
from voicecall.config import CallConfig
from voicecall.conversation.wait_filler import WaitFiller, frame_is_loud

LOUD = ulaw_encode((0.3 * np.sin(np.arange(160) * 2 * np.pi * 440 / 8000)).astype(np.float32))
QUIET = ulaw_encode(np.zeros(160, dtype=np.int16))


def _filler(stalled_ms: float = 0.0, **cfg: object) -> tuple[WaitFiller, list[str], dict[str, float]]:
    said: list[str] = []
    stall = {"ms": stalled_ms, "reply_ms": 0.0}
    config = CallConfig(**{"wait_filler_after_ms": 600, "wait_filler_quiet_ms": 400, "stt_stall_ms": 600, **cfg})
    return WaitFiller(config, said.append, lambda _now: stall["ms"], lambda _now: stall["reply_ms"]), said, stall


def test_loudness_tells_speech_from_silence() -> None:
    assert frame_is_loud(LOUD)
    assert not frame_is_loud(QUIET)
    assert not frame_is_loud(ulaw_encode(np.full(160, 40, dtype=np.int16)))  # line hiss, -58 dBFS


def test_a_late_answer_gets_the_filler_timed_from_the_turn_end() -> None:
    async def main() -> None:
        filler, said, _ = _filler(wait_filler_after_ms=200)
        filler.reply_started(time.monotonic_ns() - 150_000_000)  # the turn ended 150 ms ago
        await asyncio.sleep(0.1)
        assert said and "200 ms" in said[0]

        filler, said, _ = _filler(wait_filler_after_ms=200)
        filler.reply_started(time.monotonic_ns())
        await asyncio.sleep(0.05)
        filler.cancel()  # the answer's audio started
        await asyncio.sleep(0.25)
        assert not said

        filler, said, _ = _filler(wait_filler="")  # off
        filler.reply_started(time.monotonic_ns() - 10**9)
        await asyncio.sleep(0.05)
        assert not said

    asyncio.run(main())


def test_a_caller_who_stops_while_stt_is_stalled_hears_it_once() -> None:
    filler, said, stall = _filler(stalled_ms=0.0, wait_filler_quiet_ms=0)
    for _ in range(10):
        filler.on_frame(True, listening=True)
    filler.on_frame(False, listening=True)
    assert not said  # stt keeps up: its turn end will come
    stall["ms"] = 700
    filler.on_frame(False, listening=False)
    assert not said  # a reply is in flight: its own clock decides
    filler.on_frame(False, listening=True)
    filler.on_frame(False, listening=True)
    assert len(said) == 1 and "700 ms" in said[0]


def test_no_filler_while_the_caller_talks_or_after_a_turn_end() -> None:
    filler, said, _ = _filler(stalled_ms=5000)
    filler.on_frame(True, listening=True)
    filler.on_frame(False, listening=True)  # a pause of 20 ms, not 400
    assert not said
    filler.turn_ended()  # the stt worker heard the whole turn
    filler.on_frame(False, listening=True)
    assert not said


def test_a_reply_waiting_on_a_stuck_worker_gets_the_filler_at_once_and_only_then() -> None:
    async def main() -> None:
        filler, said, stall = _filler(wait_filler_after_ms=5000, worker_stall_ms=300)
        filler.on_frame(False, listening=True)
        stall["reply_ms"] = 900  # a stale count with no reply due says nothing
        filler.on_frame(False, listening=True)
        assert not said
        stall["reply_ms"] = 0
        filler.reply_started(time.monotonic_ns())
        filler.on_frame(False, listening=False)
        assert not said  # the llm and tts workers keep up: the turn-end clock decides
        stall["reply_ms"] = 320  # the tts worker stopped (SIGSTOP) with the first sentence unread
        filler.on_frame(False, listening=False)
        filler.on_frame(False, listening=False)
        assert len(said) == 1 and "320 ms" in said[0]
        await asyncio.sleep(0)

        filler, said, stall = _filler(wait_filler_after_ms=5000, worker_stall_ms=0)  # off
        filler.reply_started(time.monotonic_ns())
        stall["reply_ms"] = 10_000
        filler.on_frame(False, listening=False)
        assert not said
        filler.cancel()

    asyncio.run(main())

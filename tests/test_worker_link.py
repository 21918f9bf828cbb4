"""The telephony side of a worker's request ring when it is full: messages kept, audio dropped."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import msgspec

from ipc.messages import KIND_AUDIO, KIND_MESSAGE, CallOpened, SttRequest, WorkerState
from ipc.ring import OwnedRing
from tests.waiting import wait_until_async
from voicecall.conversation.links import WorkerLink, WorkerLinks

FRAME = b"\xff" * 160


def _fill(link: WorkerLink) -> int:
    n = 0
    while link.send_audio(FRAME, 1, 0, n, 20 * n, 0):
        n += 1
    return n


def test_a_message_meeting_a_full_ring_is_sent_before_later_audio() -> None:
    with OwnedRing("stt_in", 1 << 12) as inbound, OwnedRing("stt_out", 1 << 12) as outbound:
        link = WorkerLink("stt", inbound.spec, outbound.spec)
        worker = inbound.spec.consumer()
        frames = _fill(link)
        assert link.send(CallOpened(call_id=7, opened_ns=1), 7)  # accepted: kept, not dropped
        assert link.pending == 1
        assert not link.send_audio(FRAME, 7, 0, 0, 0, 0)  # audio for a call the worker does not know yet
        assert len(worker.read_batch(4)) == 4  # a restarted worker drains the stale audio
        assert link.send_audio(FRAME, 7, 0, 1, 20, 0) and link.pending == 0
        rest = worker.read_batch(1000)
        assert len(rest) == frames - 4 + 2
        opened, audio = rest[-2], rest[-1]
        assert opened.kind == KIND_MESSAGE and opened.call_id == 7
        assert msgspec.msgpack.decode(opened.payload, type=SttRequest) == CallOpened(call_id=7, opened_ns=1)
        assert audio.kind == KIND_AUDIO and audio.call_id == 7 and audio.seq == 1
        worker.close()
        link.close()


def test_kept_messages_are_retried_on_the_loop_and_discarded_when_the_worker_dies() -> None:
    async def main() -> None:
        with ExitStack() as stack:
            rings = {f"{w}_{d}": stack.enter_context(OwnedRing(f"{w}_{d}", 1 << 12)).spec
                     for w in ("stt", "llm", "tts") for d in ("in", "out")}
            links = WorkerLinks(rings)
            link = links["stt"]
            worker = rings["stt_in"].consumer()
            _fill(link)
            link.send(CallOpened(call_id=7, opened_ns=1), 7)
            worker.read_batch(1000)  # room, but no audio comes to carry the message
            await wait_until_async(lambda: link.pending == 0, 2.0, "the kept message retried")
            assert [r.call_id for r in worker.read_batch(10)] == [7]
            _fill(link)
            link.send(CallOpened(call_id=8, opened_ns=2), 8)
            links.set_state("stt", WorkerState.RESTARTING)
            assert link.pending == 0  # its successor gets the calls' own re-announcements instead
            worker.close()
            for each in links.links.values():
                each.close()

    asyncio.run(main())


def test_unread_time_counts_only_what_was_watched() -> None:
    """The llm and tts links are asked only while a reply waits: a request written after a long
    unwatched spell is not "unread for" that spell (the soak heard "One moment." with no fault)."""
    with OwnedRing("tts_in", 1 << 12) as inbound, OwnedRing("tts_out", 1 << 12) as outbound:
        link = WorkerLink("tts", inbound.spec, outbound.spec)
        link.state = WorkerState.READY
        worker = inbound.spec.consumer()
        t = 10**12
        assert link.unread_for_ms(t) == 0.0  # empty
        link.send(CallOpened(call_id=1, opened_ns=1), 1)
        t += 2 * 10**9  # two seconds nobody looked; the request was written just now
        assert link.unread_for_ms(t) == 0.0
        for _ in range(6):  # a stopped worker: watched every 60 ms, never read
            t += 60_000_000
            stalled = link.unread_for_ms(t)
        assert stalled == 360.0
        worker.read_batch(10)
        t += 60_000_000
        assert link.unread_for_ms(t) == 0.0
        worker.close()
        link.close()

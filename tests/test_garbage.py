"""Telephony's garbage collector: an ended call is freed a moment after it ends, not hundreds of calls later."""

from __future__ import annotations

import asyncio
import gc
import weakref

from tests.test_call_session import FakePort, FarEnd, _finish_greeting, _run
from voicecall.conversation.session import CallSession
from voicecall.telephony.garbage import CallGarbageCollector


def test_an_ended_call_is_freed_by_the_collection_its_end_schedules() -> None:
    refs: list[weakref.ref[CallSession]] = []

    async def scenario(session: CallSession, port: FakePort, far: FarEnd) -> None:
        await _finish_greeting(session, port, far)
        refs.append(weakref.ref(session))

    async def after_the_calls() -> CallGarbageCollector:
        collector = CallGarbageCollector(delay_s=0.05)
        collector.call_ended()
        collector.call_ended()  # two ends in the delay: one collection
        await asyncio.sleep(0.2)
        collector.close()
        return collector

    gc.disable()  # only the collector may free what the call left (as in a process whose old generation is big)
    try:
        _run(scenario)
        assert refs[0]() is not None, "freed by reference counting: the session no longer holds cycles"
        collector = asyncio.run(after_the_calls())
    finally:
        gc.enable()
    assert refs[0]() is None
    assert collector.collections == 1 and collector.freed > 0


def test_closing_cancels_a_pending_collection() -> None:
    async def main() -> int:
        collector = CallGarbageCollector(delay_s=0.05)
        collector.call_ended()
        collector.close()
        await asyncio.sleep(0.1)
        return collector.collections

    assert asyncio.run(main()) == 0

"""The asyncio adapter on a real event loop, fed by a producer in a spawned process."""

from __future__ import annotations

import asyncio
import multiprocessing as mp

from ipc.aio import AsyncRingReader
from ipc.ring import OwnedRing, Record
from tests import ring_children as rc

CTX = mp.get_context("spawn")


def test_reader_gets_every_record_from_a_spawned_producer_and_parks_between_bursts() -> None:
    bursts, per_burst = 20, 50
    total = bursts * per_burst

    async def main(ring: OwnedRing) -> list[Record]:
        got: list[Record] = []
        done = asyncio.Event()
        ticks = 0

        def on_records(records: list[Record]) -> None:
            got.extend(records)
            if len(got) >= total:
                done.set()

        async def ticker() -> None:  # the loop stays free for other work while records flow
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        cons = ring.spec.consumer()
        reader = AsyncRingReader(cons, on_records, batch=16)
        reader.start()
        tick_task = asyncio.create_task(ticker())
        proc = CTX.Process(target=rc.paced_producer, args=(ring.spec, bursts, per_burst, 0.02), daemon=True)
        proc.start()
        try:
            await asyncio.wait_for(done.wait(), 30.0)
        finally:
            reader.close()
            await asyncio.wait_for(tick_task, 1.0)
            proc.join(10.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
            cons.close()
        assert ticks > 5
        return got

    with OwnedRing("aio", 1 << 14) as ring:
        got = asyncio.run(main(ring))
        stats = ring.stats()
    assert [r.seq for r in got] == list(range(total))
    assert all(r.payload == r.seq.to_bytes(4, "little") * 40 for r in got)
    assert stats.parks >= bursts // 2 and stats.bells >= bursts // 2  # woken by the doorbell, not polling
    assert stats.records_out == total


def test_a_failing_callback_does_not_stall_the_reader() -> None:
    async def main(ring: OwnedRing) -> list[int]:
        prod, cons = ring.spec.producer(), ring.spec.consumer()
        seen: list[int] = []
        enough = asyncio.Event()

        def on_records(records: list[Record]) -> None:
            for rec in records:
                seen.append(rec.seq)
                if rec.seq == 0:
                    raise ValueError("boom")
            if len(seen) >= 3:
                enough.set()

        reader = AsyncRingReader(cons, on_records, batch=1)
        reader.start()
        for seq in range(3):
            prod.write(1, b"x", seq=seq)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(enough.wait(), 5.0)
        reader.close()
        prod.write(1, b"late")  # after close: the consumer is no longer parked, no bell
        bells = ring.stats().bells
        prod.close()
        cons.close()
        assert bells <= 3
        return seen

    with OwnedRing("aio_err", 1 << 14) as ring:
        assert asyncio.run(main(ring)) == [0, 1, 2]

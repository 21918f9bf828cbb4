"""asyncio adapter: a ring consumer woken by its doorbell through `loop.add_reader` (no thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ipc.ring import Record, RingConsumer


class AsyncRingReader:
    """Delivers a ring's records to a callback on the event loop; parks when idle.

    The doorbell fd stays registered; only the ring's parked flag toggles, so while records
    keep flowing the producer makes no syscall. At most `batches_per_wake` batches are handed
    over per wake-up before yielding to the loop, so a busy ring cannot starve other work.
    """

    def __init__(
        self,
        consumer: RingConsumer,
        on_records: Callable[[list[Record]], None],
        *,
        batch: int = 256,
        batches_per_wake: int = 8,
    ) -> None:
        self._consumer = consumer
        self._on_records = on_records
        self._batch = batch
        self._batches_per_wake = batches_per_wake
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: asyncio.Handle | None = None

    def start(self) -> None:
        """Register with the running loop and deliver anything already pending."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._consumer.fileno, self._on_readable)
        self._drain_then_park()

    def _on_readable(self) -> None:
        self._consumer.disarm()
        self._drain_then_park()

    def _drain_then_park(self) -> None:
        self._scheduled = None
        for _ in range(self._batches_per_wake):
            records = self._consumer.read_batch(self._batch)
            if not records:
                if self._consumer.arm():
                    return
                continue
            self._on_records(records)
        assert self._loop is not None
        self._scheduled = self._loop.call_soon(self._drain_then_park)

    def close(self) -> None:
        """Unregister from the loop (the consumer itself is closed by its owner)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._loop is not None:
            try:
                self._loop.remove_reader(self._consumer.fileno)
            except (ValueError, OSError):
                pass
            self._loop = None

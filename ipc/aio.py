"""asyncio adapter: a ring consumer woken by its doorbell through `loop.add_reader` (no thread)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ipc.ring import Record, RingConsumer

log = logging.getLogger(__name__)


class AsyncRingReader:
    """Delivers a ring's records to a callback on the event loop; parks when idle.

    The doorbell fd stays registered; only the ring's parked flag toggles, so while records
    keep flowing the producer makes no syscall. At most `batches_per_wake` batches are handed
    over per wake-up before yielding to the loop, so a busy ring cannot starve other work.
    The event loop never spins: when the ring is empty the reader parks at once.
    A callback that raises is logged and the reader carries on (a stalled reader would
    silently stop a call's audio).
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
        self._consumer.disarm()  # parked=0 and reset the (level-triggered) eventfd
        if self._scheduled is None:  # otherwise a drain is already queued on the loop
            self._drain_then_park()

    def _drain_then_park(self) -> None:
        self._scheduled = None
        consumer = self._consumer
        for _ in range(self._batches_per_wake):
            records = consumer.read_batch(self._batch)
            if not records:
                if consumer.arm():
                    return
                continue
            try:
                self._on_records(records)
            except Exception:
                log.exception("ring %r: on_records callback failed; %d records lost",
                              consumer.spec.label, len(records))
        assert self._loop is not None
        self._scheduled = self._loop.call_soon(self._drain_then_park)

    def close(self) -> None:
        """Unregister from the loop (the consumer itself is closed by its owner). Idempotent."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._loop is not None:
            try:
                self._loop.remove_reader(self._consumer.fileno)
            except (ValueError, OSError):
                pass
            self._loop = None
            if not self._consumer.closed:
                self._consumer.disarm()  # nobody waits on the bell any more: stop the producer ringing

"""Ended calls freed within seconds: a full collection shortly after each call ends.

A `CallSession` and its helpers refer to each other (the helpers keep the session, the session
their bound methods), so an ended call is freed by the cyclic collector, not by reference
counting. Calls live long enough for their objects to reach the oldest generation, which Python
collects only when its new objects outnumber a quarter of the old ones: in a telephony process
holding ~50k objects from start-up that was every ~400 calls, and RSS grew ~17 KB a call until
the first such collection (two 30-minute soaks, README "Faults and shutdown").

So the objects built at start-up, which live as long as the process, are frozen out of the
collector's sight (`gc.freeze`), and a call's end schedules one full collection `delay_s`
later (once its WebSocket handler has let go too; several ends in that time share one), which
then scans only what calls created: about a millisecond, off the media path's hot moments.
"""

from __future__ import annotations

import asyncio
import gc
import logging

log = logging.getLogger("voicecall.telephony")


class CallGarbageCollector:
    """Freezes start-up objects and collects a moment after calls end (owned by the telephony process)."""

    def __init__(self, delay_s: float = 2.0) -> None:
        self.delay_s = delay_s
        self._handle: asyncio.TimerHandle | None = None
        self.collections = 0
        self.freed = 0  # unreachable objects found, over all collections

    def freeze_startup(self) -> None:
        """Everything built so far lives as long as the process: out of every later collection."""
        gc.collect()
        gc.freeze()
        log.info("telephony: %d start-up objects frozen out of garbage collection", gc.get_freeze_count())

    def call_ended(self) -> None:
        """A call ended: collect `delay_s` from now, unless a collection is already due."""
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.delay_s, self._collect)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _collect(self) -> None:
        self._handle = None
        self.freed += gc.collect()
        self.collections += 1

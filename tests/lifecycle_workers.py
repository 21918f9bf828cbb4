"""Test-only workers that do trivial real work, to exercise the shared lifecycle."""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from ipc.messages import CallClosed, CallOpened, Cancel, Partial
from ipc.ring import Record
from workers.base import Progress, Worker


class EchoConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    load_s: float = 0.0
    fail_load: str = ""
    #: after this many messages, stop answering health checks as healthy (simulates a hang)
    hang_after: int = -1


class EchoWorker(Worker):
    """Answers every CallOpened with a Partial naming the call (real, if trivial, work)."""

    config_type = EchoConfig
    request_union = CallOpened | CallClosed | Cancel

    def load(self, progress: Progress) -> None:
        if self.config.fail_load:
            raise FileNotFoundError(self.config.fail_load)
        steps = 4
        for i in range(steps):
            progress("loading echo model", i + 1, steps)
            time.sleep(self.config.load_s / steps)
        self.seen = 0

    def warm_up(self) -> None:
        self.seen = 0

    def on_message(self, msg: Any, record: Record) -> None:
        self.seen += 1
        if isinstance(msg, CallOpened):
            self.outbox.message(
                Partial(call_id=msg.call_id, turn_id=0, text=f"pid {os.getpid()} call {msg.call_id}", ts_ns=time.monotonic_ns()),
                msg.call_id,
            )
        if self.config.hang_after >= 0 and self.seen >= self.config.hang_after:
            while True:  # a wedged model call: the serve loop never comes back
                time.sleep(1)

"""Test-only children that do trivial real work, to exercise the shared lifecycle and the supervisor.

Behaviour switches come from the environment (set per worker through `[x.process] env` in the
test config, which the supervisor applies before the worker module is imported).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import msgspec

from ipc.channel import ChannelClosed, ControlChannel
from ipc.child import bootstrap_child
from ipc.messages import (
    CallClosed,
    CallOpened,
    Cancel,
    Drain,
    Drained,
    HealthCheck,
    HealthReply,
    Partial,
    Ready,
    Stop,
    ToChild,
    WorkerStatus,
)
from ipc.ring import Record
from workers.base import Progress, Worker


class EchoConfig(msgspec.Struct, kw_only=True):
    """Lenient on purpose: under the supervisor it is handed a real worker's config section."""

    load_s: float = 0.0
    fail_load: str = ""
    #: after this many messages, wedge the serve loop (simulates a hung model call)
    hang_after: int = -1


class EchoWorker(Worker):
    """Answers every CallOpened with a Partial naming its pid and the call (real, if trivial, work)."""

    config_type = EchoConfig
    request_union = CallOpened | CallClosed | Cancel

    def load(self, progress: Progress) -> None:
        fail = self.config.fail_load or os.environ.get("ECHO_FAIL_LOAD", "")
        if fail:
            raise FileNotFoundError(fail)
        load_s = self.config.load_s or float(os.environ.get("ECHO_LOAD_S", "0"))
        steps = 4
        for i in range(steps):
            progress("loading echo model", i + 1, steps)
            time.sleep(load_s / steps)
        self.hang_after = self.config.hang_after if self.config.hang_after >= 0 else int(os.environ.get("ECHO_HANG_AFTER", "-1"))
        self.seen = 0

    def warm_up(self) -> None:
        self.seen = 0

    def poll(self) -> None:
        if self.hang_after == 0:  # wedge as soon as serving starts
            while True:
                time.sleep(1)

    def on_message(self, msg: Any, record: Record) -> None:
        self.seen += 1
        if isinstance(msg, CallOpened):
            self.outbox.message(
                Partial(call_id=msg.call_id, turn_id=0, text=f"pid {os.getpid()} call {msg.call_id}", ts_ns=time.monotonic_ns()),
                msg.call_id,
            )
        if self.hang_after >= 0 and self.seen >= self.hang_after:
            while True:  # a wedged model call: the serve loop never comes back
                time.sleep(1)


def quiet_telephony_main(spec: Any) -> None:
    """A telephony stand-in that serves no HTTP: it answers the lifecycle and logs WorkerStatus."""
    bootstrap_child("telephony", "INFO", spec.death)
    chan = ControlChannel(spec.control, ToChild)
    log_path = os.environ.get("QUIET_TELEPHONY_LOG")
    chan.send(Ready(worker="telephony", load_s=0.0))
    try:
        while True:
            msg = chan.recv(timeout=1.0)
            if isinstance(msg, HealthCheck):
                chan.send(HealthReply(nonce=msg.nonce, worker="telephony"))
            elif isinstance(msg, WorkerStatus) and log_path:
                with open(log_path, "a") as f:
                    f.write(f"{msg.worker} {msg.state.value}\n")
            elif isinstance(msg, Drain):
                chan.send(Drained())
            elif isinstance(msg, Stop):
                break
    except ChannelClosed:
        pass
    sys.stderr.flush()
    os._exit(0)

"""The shared worker lifecycle, in real spawned processes with a test-only worker."""

from __future__ import annotations

import os
import signal

import pytest

from ipc.messages import CallOpened, SttEvent
from tests.lifecycle_workers import EchoConfig
from tests.waiting import wait_until
from voicecall.sim.worker_harness import WorkerHarness, WorkerStartFailed

TARGET = "tests.lifecycle_workers:EchoWorker"


def test_load_progress_ready_serve_stop() -> None:
    with WorkerHarness("echo", TARGET, EchoConfig(load_s=0.2), SttEvent) as h:
        ready = h.start(30)
        assert ready.worker == "echo" and ready.load_s >= 0.2
        assert [p.done for p in h.progress if p.stage == "loading echo model"] == [1, 2, 3, 4]
        h.send(CallOpened(call_id=7), call_id=7)
        got = h.collect(lambda r, m: m is not None, 10)
        assert got and got[-1][1].text.endswith("call 7")
        reply = h.health()
        assert reply is not None and reply.ok
        proc = h.handle.process
        assert h.handle.stop(grace_s=3.0) == 0
        assert not proc.is_alive()


def test_failed_load_names_worker_and_cause() -> None:
    with WorkerHarness("echo", TARGET, EchoConfig(fail_load="/models/missing.onnx"), SttEvent) as h:
        with pytest.raises(WorkerStartFailed) as err:
            h.start(30)
        assert err.value.name == "echo"
        assert "missing.onnx" in err.value.reason and "FileNotFoundError" in err.value.reason


def test_hung_worker_stops_answering_health() -> None:
    with WorkerHarness("echo", TARGET, EchoConfig(hang_after=1), SttEvent) as h:
        h.start(30)
        h.send(CallOpened(call_id=1), call_id=1)
        h.collect(lambda r, m: m is not None, 10)
        assert h.health(timeout_s=1.5) is None


def test_worker_exits_when_supervisor_vanishes() -> None:
    # Closing the death pipe is what the kernel does when the supervisor dies.
    with WorkerHarness("echo", TARGET, EchoConfig(), SttEvent) as h:
        h.start(30)
        pid = h.handle.pid
        h.handle._death_writer.close()  # type: ignore[union-attr]
        h.handle._death_writer = None
        wait_until(lambda: not h.handle.alive(), 10, "the worker to exit")
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sigkill_then_restart_reattaches_rings() -> None:
    with WorkerHarness("echo", TARGET, EchoConfig(), SttEvent) as h:
        h.start(30)
        first = h.handle.pid
        h.handle.signal_group(signal.SIGKILL)
        h.handle.process.join(5)
        h.handle.reap()
        h.start(30)
        assert h.handle.pid != first
        h.send(CallOpened(call_id=9), call_id=9)
        got = h.collect(lambda r, m: m is not None, 10)
        assert got and got[-1][1].text == f"pid {h.handle.pid} call 9"

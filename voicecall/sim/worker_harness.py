"""Run one real worker process the way the supervisor does, and talk to it like telephony does.

Used by the worker tests (stt, llm, tts, lifecycle): real spawn, real rings, real lifecycle.
"""

from __future__ import annotations

import multiprocessing.connection
import time
from typing import Any

import msgspec

from ipc.channel import ChannelClosed, ControlChannel
from ipc.messages import KIND_AUDIO, KIND_MESSAGE, Codec, Failed, HealthCheck, HealthReply, LoadProgress, Ready
from ipc.ring import FullPolicy, OwnedRing, Record
from voicecall.process import ChildHandle
from workers.base import WorkerSpec, worker_main
from workers.config import ProcessConfig


class WorkerStartFailed(Exception):
    """The worker could not start: it sent `Failed`, died, or was not ready in time."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class WorkerHarness:
    """A worker process with its inbound/outbound rings; the test plays the telephony side."""

    def __init__(
        self,
        name: str,
        target: str,
        config: msgspec.Struct,
        event_union: Any,
        *,
        process: ProcessConfig | None = None,
        ring_bytes: int = 1 << 22,
    ) -> None:
        process = process or ProcessConfig()
        self.inbound = OwnedRing(f"{name}-in", ring_bytes)
        self.outbound = OwnedRing(f"{name}-out", ring_bytes)
        spec = WorkerSpec(
            name=name, target=target, config_json=msgspec.json.encode(config), device=process.device,
            threads=process.threads, cuda_visible_devices=process.cuda_visible_devices, env=dict(process.env),
            inbound=self.inbound.spec, outbound=self.outbound.spec,
        )
        self.handle = ChildHandle(name, worker_main, spec)
        self.progress: list[LoadProgress] = []
        self.codec = Codec(event_union)
        self._encode = msgspec.msgpack.Encoder().encode
        self._producer = self.inbound.spec.producer(FullPolicy.WAIT, wait_s=1.0)
        self._consumer = self.outbound.spec.consumer()
        self._unread: list[Record] = []

    def start(self, timeout_s: float = 120.0) -> Ready:
        """Spawn the worker and block until `Ready` (load progress is kept in `progress`)."""
        self.handle.start()
        chan, proc = self.handle.channel, self.handle.process
        assert chan is not None and proc is not None
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            ready = multiprocessing.connection.wait([chan.conn, proc.sentinel], timeout=min(left, 1.0))
            if chan.conn in ready:
                try:
                    msg = chan.recv()
                except ChannelClosed:
                    msg = None
                if isinstance(msg, Ready):
                    return msg
                if isinstance(msg, Failed):
                    raise WorkerStartFailed(self.handle.name, msg.reason)
                if isinstance(msg, LoadProgress):
                    self.progress.append(msg)
                if msg is not None:
                    continue
            if not proc.is_alive():
                proc.join(0.1)
                raise WorkerStartFailed(self.handle.name, f"exited during start-up with code {proc.exitcode}")
        raise WorkerStartFailed(self.handle.name, f"not ready after {timeout_s:.0f} s")

    def send(self, msg: msgspec.Struct, call_id: int = 0, turn_id: int = 0, seq: int = 0) -> None:
        assert self._producer.write(KIND_MESSAGE, self._encode(msg), call_id, turn_id, seq)

    def send_audio(self, mulaw: bytes, call_id: int, turn_id: int, seq: int, media_ms: int) -> None:
        assert self._producer.write(KIND_AUDIO, mulaw, call_id, turn_id, seq, media_ms)

    def records(self, timeout_s: float) -> list[Record]:
        """Whatever arrives within `timeout_s` (returns as soon as something is there)."""
        if not self._consumer.pending():
            self._consumer.wait(timeout_s)
        return self._consumer.read_batch()

    def collect(self, until: Any, timeout_s: float) -> list[tuple[Record, Any]]:
        """Read (record, decoded message or None) pairs until `until(record, msg)` is true or timeout."""
        out: list[tuple[Record, Any]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = self._unread or self.records(min(0.2, max(deadline - time.monotonic(), 0.0)))
            self._unread = []
            for i, rec in enumerate(batch):
                msg = self.codec.decode(rec.payload) if rec.kind == KIND_MESSAGE else None
                out.append((rec, msg))
                if until(rec, msg):
                    self._unread = batch[i + 1 :]  # kept for the next call, never dropped
                    return out
        return out

    def health(self, timeout_s: float = 5.0) -> HealthReply | None:
        chan: ControlChannel = self.handle.channel  # type: ignore[assignment]
        chan.send(HealthCheck(nonce=1, sent_ns=time.monotonic_ns()))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = chan.recv(timeout=max(deadline - time.monotonic(), 0.0))
            if isinstance(msg, HealthReply):
                return msg
        return None

    def close(self) -> None:
        self.handle.stop(grace_s=3.0)
        self._producer.close()
        self._consumer.close()
        self.inbound.close()
        self.outbound.close()

    def __enter__(self) -> WorkerHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

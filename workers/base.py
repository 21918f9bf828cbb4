"""The one lifecycle every model worker speaks: load -> Ready -> serve -> Stop -> exit 0.

    supervisor                         worker process (spawned, own process group)
    ----------                         -----------------------------------------------
    spawn(worker_main, spec) ------->  set device env (threads, CUDA_VISIBLE_DEVICES) *before*
                                       importing anything heavy; start the death watch
                             <-------  LoadProgress ...   (worker.load reports steps)
                             <-------  Ready(load_s)      (after worker.warm_up: it can serve)
    HealthCheck(nonce) ------------->
                             <-------  HealthReply(nonce, ok)
    Stop(deadline_s) --------------->  worker.shutdown(); detach rings; exit 0
                             <-------  Failed(reason)     (load error or fatal error; exit 1)

Requests arrive on the worker's inbound ring (MESSAGE records carry the worker's request
union, AUDIO records raw mulaw); results leave on its outbound ring through an `Outbox`.
Workers differ only in `load`, `warm_up` and how they handle requests.
"""

from __future__ import annotations

import abc
import importlib
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import msgspec

from ipc.channel import ChannelClosed, ControlChannel
from ipc.child import bootstrap_child
from ipc.messages import (
    KIND_AUDIO,
    KIND_MESSAGE,
    KIND_PLAYED,
    KIND_TEXT,
    Codec,
    Failed,
    HealthCheck,
    HealthReply,
    LoadProgress,
    Ready,
    Stop,
    ToChild,
)
from ipc.ring import FullPolicy, Record, RingFull, RingProducer, RingSpec

log = logging.getLogger("voicecall.worker")


@dataclass
class WorkerSpec:
    """Everything a worker process needs, handed over at spawn (pickled once, by multiprocessing)."""

    name: str
    #: "module:Class" of the Worker subclass, imported only after the device env is set.
    target: str
    #: The worker's config section, JSON-encoded (decoded with the class's `config_type`).
    config_json: bytes
    #: ProcessConfig fields: threads, device, cuda_visible_devices, env.
    device: str = "cpu"
    threads: int = 1
    cuda_visible_devices: str = ""
    env: dict[str, str] = field(default_factory=dict)
    control: Connection | None = None
    death: Connection | None = None
    inbound: RingSpec | None = None
    outbound: RingSpec | None = None
    log_level: str = "INFO"


class Progress:
    """Reports load steps to the supervisor (which draws a progress line for the operator)."""

    def __init__(self, worker: str, channel: ControlChannel | None) -> None:
        self._worker = worker
        self._channel = channel

    def __call__(self, stage: str, done: float = 0.0, total: float = 0.0, detail: str = "") -> None:
        log.info("%s: %s %s", self._worker, stage, detail)
        if self._channel is not None:
            self._channel.send(LoadProgress(worker=self._worker, stage=stage, done=done, total=total, detail=detail))


class Outbox:
    """Thread-safe writer of the worker's outbound ring (one producer, many worker threads)."""

    def __init__(self, producer: RingProducer) -> None:
        self._producer = producer
        self._lock = threading.Lock()
        self._encode = msgspec.msgpack.Encoder().encode
        self.lost = 0

    def _write(self, kind: int, payload: bytes, call_id: int, turn_id: int, seq: int, aux: int, ts_ns: int | None) -> bool:
        with self._lock:
            try:
                ok = self._producer.write(kind, payload, call_id, turn_id, seq, aux, ts_ns)
            except RingFull as exc:
                log.error("outbound ring full, record lost: %s", exc)
                ok = False
        if not ok:
            self.lost += 1
        return ok

    def message(self, msg: msgspec.Struct, call_id: int = 0, turn_id: int = 0, seq: int = 0) -> bool:
        """Send one event of the worker's event union."""
        return self._write(KIND_MESSAGE, self._encode(msg), call_id, turn_id, seq, 0, None)

    def audio(self, mulaw: bytes, call_id: int, turn_id: int, seq: int, aux: int = 0, ts_ns: int | None = None) -> bool:
        """Send mulaw 8 kHz audio (a whole number of 160-byte frames)."""
        return self._write(KIND_AUDIO, mulaw, call_id, turn_id, seq, aux, ts_ns)

    def text(self, text: str, call_id: int, turn_id: int, seq: int, ts_ns: int | None = None) -> bool:
        """Send a piece of generated text (LLM token deltas)."""
        return self._write(KIND_TEXT, text.encode("utf-8"), call_id, turn_id, seq, 0, ts_ns)


class Worker(abc.ABC):
    """A model worker: subclasses implement load/warm_up and request handling; nothing else."""

    #: Config section type (decoded from WorkerSpec.config_json).
    config_type: ClassVar[type]
    #: Union of messages this worker receives in MESSAGE records.
    request_union: ClassVar[Any]

    def __init__(self, name: str, config: Any, outbox: Outbox) -> None:
        self.name = name
        self.config = config
        self.outbox = outbox
        self._codec = Codec(self.request_union)

    @abc.abstractmethod
    def load(self, progress: Progress) -> None:
        """Load models (report each step through `progress`)."""

    @abc.abstractmethod
    def warm_up(self) -> None:
        """Run one real inference so the first caller does not pay for lazy initialisation."""

    @abc.abstractmethod
    def on_message(self, msg: Any, record: Record) -> None:
        """Handle one decoded request. Must not block for long: hand heavy work to a thread."""

    def on_audio(self, record: Record) -> None:
        """Handle one AUDIO record (only the STT worker receives audio)."""
        log.warning("%s: unexpected audio record for call %d", self.name, record.call_id)

    def on_played(self, record: Record) -> None:
        """Handle one PLAYED record: audio the agent played to the caller (only the STT worker's
        echo gate asks for it)."""
        log.warning("%s: unexpected played-audio record for call %d", self.name, record.call_id)

    def on_records(self, records: list[Record]) -> None:
        """Dispatch a batch from the inbound ring; a bad record is logged and skipped."""
        for rec in records:
            if rec.kind == KIND_AUDIO:
                self.on_audio(rec)
            elif rec.kind == KIND_PLAYED:
                self.on_played(rec)
            elif rec.kind == KIND_MESSAGE:
                try:
                    msg = self._codec.decode(rec.payload)
                except msgspec.DecodeError as exc:
                    log.error("%s: undecodable request for call %d: %s", self.name, rec.call_id, exc)
                    continue
                self.on_message(msg, rec)
            else:
                log.error("%s: unexpected record kind %d", self.name, rec.kind)

    def poll(self) -> None:
        """Called on every serve-loop iteration (at least every `poll_interval_s`)."""

    poll_interval_s: float = 0.5

    def busy_calls(self) -> int:
        """Calls with work in flight (reported in health replies)."""
        return 0

    def health(self) -> str | None:
        """None when healthy, else what is wrong (the supervisor treats it as hung)."""
        return None

    def shutdown(self, deadline_s: float) -> None:
        """Finish or abandon in-flight work within `deadline_s`, release models."""


def _apply_device_env(spec: WorkerSpec) -> None:
    # Must run before torch / onnxruntime / ctranslate2 / vLLM are imported: they read these once.
    threads = str(max(1, spec.threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CT2_INTER_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices if spec.device == "cuda" else ""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # model libraries' bars; we report load progress ourselves
    if spec.device == "cpu":  # embedded models ship in packages; never reach for a hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.update(spec.env)


def worker_main(spec: WorkerSpec) -> None:
    """Entry point of every worker process (spawn target)."""
    bootstrap_child(spec.name, spec.log_level, spec.death)
    _apply_device_env(spec)
    assert spec.control is not None and spec.inbound is not None and spec.outbound is not None
    control = ControlChannel(spec.control, ToChild)
    code = 1
    try:
        code = _run(spec, control)
    except ChannelClosed:
        log.warning("%s: supervisor channel closed; exiting", spec.name)
    except BaseException as exc:  # noqa: BLE001 - report any fatal error as data, then exit non-zero
        log.error("%s: fatal error:\n%s", spec.name, traceback.format_exc())
        try:
            control.send(Failed(worker=spec.name, reason=f"{type(exc).__name__}: {exc}", recoverable=True))
        except ChannelClosed:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: model libraries' atexit hooks can hang


def _run(spec: WorkerSpec, control: ControlChannel) -> int:
    module_name, _, class_name = spec.target.partition(":")
    cls: type[Worker] = getattr(importlib.import_module(module_name), class_name)
    config = msgspec.json.decode(spec.config_json, type=cls.config_type)
    producer = spec.outbound.producer(FullPolicy.WAIT, wait_s=1.0)  # type: ignore[union-attr]
    consumer = spec.inbound.consumer()  # type: ignore[union-attr]
    worker = cls(spec.name, config, Outbox(producer))
    t0 = time.monotonic()
    try:
        worker.load(Progress(spec.name, control))
    except Exception as exc:
        log.error("%s: load failed:\n%s", spec.name, traceback.format_exc())
        control.send(Failed(worker=spec.name, reason=f"load failed: {type(exc).__name__}: {exc}", recoverable=False))
        return 1
    Progress(spec.name, control)("warm-up")
    worker.warm_up()
    load_s = time.monotonic() - t0
    control.send(Ready(worker=spec.name, load_s=load_s))
    log.info("%s: ready in %.1f s", spec.name, load_s)
    stop: Stop | None = None
    ctl_fd = control.fileno()
    while stop is None:
        readable = consumer.wait(worker.poll_interval_s, (ctl_fd,))
        if readable:
            while stop is None and control.poll(0):
                msg = control.recv()
                if isinstance(msg, Stop):
                    stop = msg
                elif isinstance(msg, HealthCheck):
                    problem = worker.health()
                    control.send(
                        HealthReply(nonce=msg.nonce, worker=spec.name, busy_calls=worker.busy_calls(),
                                    ok=problem is None, detail=problem or "")
                    )
        records = consumer.read_batch()
        if records:
            worker.on_records(records)
        worker.poll()
    log.info("%s: stopping (deadline %.1f s)", spec.name, stop.deadline_s)
    worker.shutdown(stop.deadline_s)
    consumer.close()
    producer.close()
    return 0

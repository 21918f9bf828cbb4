"""The telephony process's ends of the worker rings, routed per call on the event loop.

Each worker has a request ring (telephony produces, never blocking: a full ring drops and
counts) and an event ring (telephony consumes through the asyncio doorbell adapter). Records
from a worker are decoded once and handed to whichever call registered for that `call_id`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from ipc.aio import AsyncRingReader
from ipc.messages import KIND_AUDIO, KIND_MESSAGE, Codec, LlmEvent, SttEvent, TtsEvent, WorkerEvent, WorkerState
from ipc.ring import FullPolicy, Record, RingProducer, RingSpec

log = logging.getLogger("voicecall.telephony")

EVENT_UNIONS = {"stt": SttEvent, "llm": LlmEvent, "tts": TtsEvent}

#: (worker, record, decoded message or None for AUDIO/TEXT records)
RecordSink = Callable[[str, Record, WorkerEvent | None], None]


class WorkerLink:
    """Requests to one worker and its events back, for every call."""

    def __init__(self, name: str, inbound: RingSpec, outbound: RingSpec) -> None:
        self.name = name
        self._producer: RingProducer = inbound.producer(FullPolicy.DROP)
        self._consumer = outbound.consumer()
        self._codec = Codec(EVENT_UNIONS[name])
        self._encode = msgspec.msgpack.Encoder().encode
        self._reader = AsyncRingReader(self._consumer, self._on_records)
        self.sinks: dict[int, RecordSink] = {}
        self.state = WorkerState.STARTING
        self.detail = ""
        self.restarts = 0
        self.dropped_requests = 0
        self.unrouted = 0

    def start(self) -> None:
        self._reader.start()

    def send(self, msg: msgspec.Struct, call_id: int, turn_id: int = 0, seq: int = 0) -> bool:
        """Queue a request; False (counted, logged) if the worker's ring is full."""
        ok = self._producer.write(KIND_MESSAGE, self._encode(msg), call_id, turn_id, seq)
        if not ok:
            self.dropped_requests += 1
            log.error("%s request ring full: dropped %s for call %d", self.name, type(msg).__name__, call_id)
        return ok

    def send_audio(self, mulaw: bytes, call_id: int, turn_id: int, seq: int, media_ms: int, arrival_ns: int) -> bool:
        """Forward one inbound frame (only the stt link carries audio)."""
        ok = self._producer.write(KIND_AUDIO, mulaw, call_id, turn_id, seq, media_ms, arrival_ns)
        if not ok:
            self.dropped_requests += 1
        return ok

    def _on_records(self, records: list[Record]) -> None:
        for rec in records:
            sink = self.sinks.get(rec.call_id)
            if sink is None:
                self.unrouted += 1  # the call already ended: its late records are dropped
                continue
            msg = None
            if rec.kind == KIND_MESSAGE:
                try:
                    msg = self._codec.decode(rec.payload)
                except msgspec.DecodeError as exc:
                    log.error("%s sent an undecodable event: %s", self.name, exc)
                    continue
            try:
                sink(self.name, rec, msg)
            except Exception:  # one call's bug must not stop delivery to the others
                log.exception("call %d failed handling a %s record", rec.call_id, self.name)

    def ring_stats(self) -> list[Any]:
        return [self._producer.stats(), self._consumer.stats()]

    def close(self) -> None:
        self._reader.close()
        self._producer.close()
        self._consumer.close()


class WorkerLinks:
    """All three links plus the readiness view the HTTP side reports."""

    def __init__(self, rings: dict[str, RingSpec]) -> None:
        self.links = {name: WorkerLink(name, rings[f"{name}_in"], rings[f"{name}_out"]) for name in EVENT_UNIONS}
        self.draining = False
        self.status_listeners: list[Callable[[str, WorkerState, str], None]] = []

    def __getitem__(self, name: str) -> WorkerLink:
        return self.links[name]

    def start(self) -> None:
        for link in self.links.values():
            link.start()

    def set_state(self, worker: str, state: WorkerState, detail: str = "", restarts: int = 0) -> None:
        link = self.links[worker]
        link.state, link.detail, link.restarts = state, detail, restarts
        for listener in list(self.status_listeners):
            listener(worker, state, detail)

    def ready(self) -> bool:
        return not self.draining and all(link.state is WorkerState.READY for link in self.links.values())

    def readiness(self) -> dict[str, Any]:
        """The /healthz body."""
        return {
            "ready": self.ready(),
            "draining": self.draining,
            "workers": {
                name: {"state": link.state.value, "detail": link.detail, "restarts": link.restarts}
                for name, link in self.links.items()
            },
        }

    def register(self, call_id: int, sink: RecordSink) -> None:
        for link in self.links.values():
            link.sinks[call_id] = sink

    def unregister(self, call_id: int) -> None:
        for link in self.links.values():
            link.sinks.pop(call_id, None)

    def close(self) -> None:
        for link in self.links.values():
            link.close()

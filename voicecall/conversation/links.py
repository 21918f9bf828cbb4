"""The telephony process's ends of the worker rings, routed per call on the event loop.

Each worker has a request ring (telephony produces, never blocking: audio that finds the ring
full is dropped and counted; a control message is kept in order and retried, see `WorkerLink`)
and an event ring (telephony consumes through the asyncio doorbell adapter). Records
from a worker are decoded once and handed to whichever call registered for that `call_id`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from ipc.aio import AsyncRingReader
from ipc.messages import (
    KIND_AUDIO,
    KIND_MESSAGE,
    KIND_PLAYED,
    Codec,
    LlmEvent,
    SttEvent,
    TtsEvent,
    WorkerEvent,
    WorkerState,
)
from ipc.ring import FullPolicy, Record, RingProducer, RingSpec

log = logging.getLogger("voicecall.telephony")

EVENT_UNIONS = {"stt": SttEvent, "llm": LlmEvent, "tts": TtsEvent}

#: (worker, record, decoded message or None for AUDIO/TEXT records)
RecordSink = Callable[[str, Record, WorkerEvent | None], None]


#: Control messages kept while a worker's request ring is full (then the oldest are dropped).
MAX_PENDING_MESSAGES = 4096
#: How soon a kept message is retried when no inbound audio comes to retry it sooner.
RETRY_S = 0.02
#: How often `unread_for_ms` looks at the worker's read position.
TAIL_CHECK_NS = 50_000_000


class WorkerLink:
    """Requests to one worker and its events back, for every call.

    A control message never meets a full ring with loss: a restarted stt worker finds its ring
    full of audio sent while it was dead, and the `CallOpened` that re-announces each live call
    must still arrive, before that call's next audio (which is dropped until it has).
    """

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
        self._pending: deque[tuple[bytes, int, int, int]] = deque()
        self._retry: asyncio.TimerHandle | None = None
        self.state_since_ns = time.monotonic_ns()
        self._tail = -1  # the worker's read position when last looked at, and since when it stood there
        self._tail_since_ns = 0
        self._tail_checked_ns = 0

    def start(self) -> None:
        self._reader.start()

    def send(self, msg: msgspec.Struct, call_id: int, turn_id: int = 0, seq: int = 0) -> bool:
        """Send a request; if the ring is full it is kept and retried in order. Always accepted."""
        payload = self._encode(msg)
        if self._flush() and self._producer.write(KIND_MESSAGE, payload, call_id, turn_id, seq):
            return True
        if len(self._pending) >= MAX_PENDING_MESSAGES:
            self._pending.popleft()
            self.dropped_requests += 1
            log.error("%s request ring full for %d messages: dropped the oldest", self.name, MAX_PENDING_MESSAGES)
        if not self._pending:
            log.warning("%s request ring full: keeping %s for call %d until there is room", self.name,
                        type(msg).__name__, call_id)
        self._pending.append((payload, call_id, turn_id, seq))
        self._schedule_retry()
        return True

    def send_audio(self, mulaw: bytes, call_id: int, turn_id: int, seq: int, media_ms: int, arrival_ns: int) -> bool:
        """Forward one inbound frame (only the stt link carries audio); dropped while messages wait."""
        return self._send_frame(KIND_AUDIO, mulaw, call_id, turn_id, seq, media_ms, arrival_ns)

    def send_played(self, mulaw: bytes, call_id: int, play_ns: int) -> bool:
        """Forward one frame the agent played (from `play_ns` on) to the stt worker's echo gate;
        dropped, not kept, like inbound audio (the gate then has a gap)."""
        return self._send_frame(KIND_PLAYED, mulaw, call_id, 0, 0, 0, play_ns)

    def _send_frame(self, kind: int, mulaw: bytes, call_id: int, turn_id: int, seq: int, aux: int, ts_ns: int) -> bool:
        """Audio is never kept for later: it goes now (after any kept messages) or is dropped and counted."""
        ok = self._flush() and self._producer.write(kind, mulaw, call_id, turn_id, seq, aux, ts_ns)
        if not ok:
            self.dropped_requests += 1
        return ok

    @property
    def pending(self) -> int:
        """Control messages waiting for room in the request ring."""
        return len(self._pending)

    def discard_pending(self) -> None:
        """The worker died: what it was sent is lost with it (calls re-announce themselves when
        its successor is ready), so nothing kept for it is sent to the successor."""
        if self._pending:
            log.info("%s down: %d kept messages discarded", self.name, len(self._pending))
            self._pending.clear()

    def unread_for_ms(self, now_ns: int) -> float:
        """How long the worker has left its requests unread: ~0 while it keeps up; the time since
        it went down while it is not ready (a stopped or hung worker reads nothing either)."""
        if self.state is not WorkerState.READY:
            return (now_ns - self.state_since_ns) / 1e6
        if now_ns - self._tail_checked_ns >= TAIL_CHECK_NS:  # a snapshot per call per frame would be waste
            # Not looked at for a while (the llm and tts links are asked only while a reply waits):
            # whatever was read meanwhile is unknown, so a request found unread counts from now.
            unwatched = now_ns - self._tail_checked_ns > 4 * TAIL_CHECK_NS
            self._tail_checked_ns = now_ns
            stats = self._producer.stats()
            if unwatched or stats.used == 0 or stats.tail != self._tail:
                self._tail, self._tail_since_ns = stats.tail, now_ns
        return (now_ns - self._tail_since_ns) / 1e6

    def _flush(self) -> bool:
        """Write the kept messages, oldest first; True when none is left."""
        while self._pending:
            payload, call_id, turn_id, seq = self._pending[0]
            if not self._producer.write(KIND_MESSAGE, payload, call_id, turn_id, seq):
                return False
            self._pending.popleft()
            if not self._pending:
                log.info("%s request ring has room again: kept messages sent", self.name)
        return True

    def _schedule_retry(self) -> None:
        if self._retry is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on the event loop (a bench harness): the next send retries
            return
        self._retry = loop.call_later(RETRY_S, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if not self._flush():
            self._schedule_retry()

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
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
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
        if state is not link.state:
            link.state_since_ns = time.monotonic_ns()
        link.state, link.detail, link.restarts = state, detail, restarts
        if state is not WorkerState.READY:
            link.discard_pending()
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

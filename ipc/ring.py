"""Single-producer single-consumer ring of variable-length records in shared memory.

Memory layout of one segment (all counters are little-endian u64, free-running, never wrapped)::

    offset  cache line  field                                    written by
    ------  ----------  ---------------------------------------  ----------
       0    0           magic "VCRING01", capacity, version      owner (once)
      64    1           head (bytes published)                   producer
      72                records_in, bytes_in, dropped,           producer
                        dropped_bytes, peak_used, bells_rung
     128    2           tail (bytes consumed)                    consumer
     136                records_out, bytes_out, parks, wakes     consumer
     192    3           parked flag (1 = consumer asleep)        consumer
     512    8..39       one-way latency histogram, 256 buckets   consumer
    4096    -           data[capacity]  (capacity: power of two)

Record framing inside data (every record starts 32-byte aligned, so a pad header always fits)::

    +-------------+------+-------+---------+---------+-----+-----+--------+------------+
    | payload_len | kind | flags | call_id | turn_id | seq | aux | ts_ns  | payload... |
    |     u32     | u16  |  u16  |   u32   |   u32   | u32 | u32 |  u64   | (padded)   |
    +-------------+------+-------+---------+---------+-----+-----+--------+------------+

A record never straddles the end of data: when it does not fit before the end, the producer
writes a PAD record (kind 0xFFFF) over the remainder and starts again at offset 0.

Order of writes (what makes it safe):

1. Producer: copy payload, write record header, *then* store `head` (the publish point).
   Consumer: load `head`, *then* read headers and payloads below it, copy out, *then* store
   `tail`. On x86-64 (TSO) stores are not reordered with stores nor loads with loads, and an
   aligned 8-byte store through a memoryview is one `mov`, so this is enough there.
2. Doorbell handshake (Dekker): the consumer stores `parked=1` then loads `head`; the producer
   stores `head` then loads `parked`. A store followed by a load to another address *can* be
   reordered even on x86, so both sides put a full fence between them (an uncontended lock
   acquire/release, which is a locked instruction). Without it both could miss each other
   and the consumer would sleep on a published record.

Defined behaviours: a record larger than the ring raises `RecordTooLarge`; on a full ring the
producer's policy decides: `DROP` (count it, return False) or `WAIT` (poll with back-off up
to a deadline, then raise `RingFull`). A producer never blocks without a deadline.
"""

from __future__ import annotations

import enum
import os
import select
import struct
import threading
import time
from multiprocessing import shared_memory
from typing import NamedTuple

from ipc.doorbell import Doorbell
from ipc.shm import attach_segment, create_segment, new_segment_name, unlink_segment

MAGIC = int.from_bytes(b"VCRING01", "little")
VERSION = 1
HEADER_BYTES = 4096
RECORD_HEADER = struct.Struct("<IHHIIIIQ")
RECORD_HEADER_BYTES = RECORD_HEADER.size  # 32
ALIGN = 32
PAD_KIND = 0xFFFF
HIST_BUCKETS = 256

# u64 slot indexes into the header (byte offset // 8)
_MAGIC, _CAPACITY, _VERSION = 0, 1, 2
_HEAD, _RECORDS_IN, _BYTES_IN, _DROPPED, _DROPPED_BYTES, _PEAK_USED, _BELLS = 8, 9, 10, 11, 12, 13, 14
_TAIL, _RECORDS_OUT, _BYTES_OUT, _PARKS, _WAKES = 16, 17, 18, 19, 20
_PARKED = 24
_HIST = 64  # byte offset 512

assert RECORD_HEADER_BYTES == ALIGN


class RingError(Exception):
    """Base of ring errors."""


class RecordTooLarge(RingError):
    """The record can never fit in this ring (not recoverable by waiting)."""


class RingFull(RingError):
    """The ring stayed full past the producer's deadline (recoverable: the consumer is slow)."""


class FullPolicy(enum.Enum):
    """What a producer does when the ring has no room."""

    DROP = "drop"
    WAIT = "wait"


class Record(NamedTuple):
    """One record as the consumer sees it; `payload` is a private copy."""

    kind: int
    call_id: int
    turn_id: int
    seq: int
    aux: int
    ts_ns: int
    payload: bytes


def _fence(_lock: threading.Lock = threading.Lock()) -> None:
    # A full memory barrier: an uncontended lock acquire/release executes a locked instruction.
    _lock.acquire()
    _lock.release()


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def latency_bucket(delta_ns: int) -> int:
    """Histogram bucket of a latency: 4 log-spaced buckets per power of two of nanoseconds."""
    if delta_ns < 8:
        return max(delta_ns, 0)
    bl = delta_ns.bit_length()
    return min((bl << 2) + ((delta_ns >> (bl - 3)) & 3) - 4, HIST_BUCKETS - 1)


def bucket_lower_ns(index: int) -> float:
    """Smallest latency (ns) that falls in bucket `index` (inverse of `latency_bucket`)."""
    if index < 8:
        return float(index)
    bl, sub = (index + 4) >> 2, (index + 4) & 3
    return float((4 + sub) << (bl - 3))


class RingSpec:
    """Picklable handle to a ring: segment name, capacity and doorbell; attach on either side."""

    __slots__ = ("name", "capacity", "doorbell", "label")

    def __init__(self, name: str, capacity: int, doorbell: Doorbell, label: str) -> None:
        self.name = name
        self.capacity = capacity
        self.doorbell = doorbell
        self.label = label

    def __getstate__(self) -> tuple:
        return (self.name, self.capacity, self.doorbell, self.label)

    def __setstate__(self, state: tuple) -> None:
        self.name, self.capacity, self.doorbell, self.label = state

    def producer(self, policy: FullPolicy = FullPolicy.DROP, wait_s: float = 0.5) -> RingProducer:
        return RingProducer(self, policy, wait_s)

    def consumer(self, *, instrument: bool = True, spin_us: float = 0.0) -> RingConsumer:
        return RingConsumer(self, instrument=instrument, spin_us=spin_us)


class OwnedRing:
    """The owner's side of a ring: creates the segment and doorbell, and alone unlinks them."""

    def __init__(self, label: str, capacity: int) -> None:
        if capacity < 4096 or capacity & (capacity - 1):
            raise ValueError(f"ring capacity must be a power of two >= 4096, got {capacity}")
        self.label = label
        self.name = new_segment_name(label)
        self._shm = create_segment(self.name, HEADER_BYTES + capacity)
        q = self._shm.buf.cast("Q")
        q[_CAPACITY] = capacity
        q[_VERSION] = VERSION
        q[_MAGIC] = MAGIC
        q.release()
        self.spec = RingSpec(self.name, capacity, Doorbell(), label)
        self._closed = False

    def stats(self) -> RingStats:
        """Read the live counters (any process may, by attaching the segment)."""
        return read_stats(self._shm.buf, self.label)

    def close(self) -> None:
        """Unmap, unlink and close the doorbell. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.spec.doorbell.close()
        try:
            self._shm.close()
        except BufferError:  # an attached view in this process is still alive; unlink anyway
            pass
        unlink_segment(self.name)

    def __enter__(self) -> OwnedRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Attached:
    """Common attach/detach for producer and consumer ends."""

    def __init__(self, spec: RingSpec) -> None:
        self.spec = spec
        self._shm: shared_memory.SharedMemory | None = attach_segment(spec.name)
        buf = self._shm.buf
        self._q = buf.cast("Q")
        if self._q[_MAGIC] != MAGIC or self._q[_CAPACITY] != spec.capacity:
            raise RingError(f"segment {spec.name} is not a voicecall ring of capacity {spec.capacity}")
        self._buf = buf
        self._cap = spec.capacity
        self._mask = spec.capacity - 1
        self._bell = spec.doorbell

    def stats(self) -> RingStats:
        return read_stats(self._buf, self.spec.label)

    def close(self) -> None:
        """Detach this process's mapping (the doorbell fd is shared with the spec's owner)."""
        if self._shm is None:
            return
        self._q.release()
        self._buf = None  # type: ignore[assignment]
        try:
            self._shm.close()
        except BufferError:
            pass
        self._shm = None


class RingProducer(_Attached):
    """The single writer of a ring."""

    def __init__(self, spec: RingSpec, policy: FullPolicy, wait_s: float) -> None:
        super().__init__(spec)
        self.policy = policy
        self.wait_s = wait_s
        self._head = self._q[_HEAD]  # resume where a previous producer (crashed?) left off
        self._tail_cache = self._q[_TAIL]

    def _room(self, total: int) -> bool:
        if self._cap - (self._head - self._tail_cache) >= total:
            return True
        self._tail_cache = self._q[_TAIL]
        return self._cap - (self._head - self._tail_cache) >= total

    def write(
        self,
        kind: int,
        payload: bytes | bytearray | memoryview,
        call_id: int = 0,
        turn_id: int = 0,
        seq: int = 0,
        aux: int = 0,
        ts_ns: int | None = None,
    ) -> bool:
        """Publish one record; False if the ring was full and the policy is DROP."""
        n = len(payload)
        need = _align(RECORD_HEADER_BYTES + n)
        if need > self._cap:
            raise RecordTooLarge(
                f"record of {n} B needs {need} B but ring {self.spec.label!r} holds {self._cap} B"
            )
        pos = self._head & self._mask
        contiguous = self._cap - pos
        total = need if need <= contiguous else contiguous + need
        if not self._room(total) and not self._wait_for_room(total, n):
            return False
        q, buf = self._q, self._buf
        if need > contiguous:
            RECORD_HEADER.pack_into(buf, HEADER_BYTES + pos, contiguous - RECORD_HEADER_BYTES, PAD_KIND, 0, 0, 0, 0, 0, 0)
            self._head += contiguous
            pos = 0
        off = HEADER_BYTES + pos
        buf[off + RECORD_HEADER_BYTES : off + RECORD_HEADER_BYTES + n] = payload
        RECORD_HEADER.pack_into(
            buf, off, n, kind, 0, call_id, turn_id, seq, aux, time.monotonic_ns() if ts_ns is None else ts_ns
        )
        self._head += need
        q[_HEAD] = self._head  # publish
        q[_RECORDS_IN] += 1
        q[_BYTES_IN] += n
        used = self._head - self._tail_cache
        if used > q[_PEAK_USED]:
            q[_PEAK_USED] = used
        _fence()
        if q[_PARKED]:
            q[_BELLS] += 1
            self._bell.ring()
        return True

    def _wait_for_room(self, total: int, n: int) -> bool:
        if self.policy is FullPolicy.WAIT:
            deadline = time.monotonic() + self.wait_s
            pause = 20e-6
            while time.monotonic() < deadline:
                time.sleep(pause)
                if self._room(total):
                    return True
                pause = min(pause * 2, 2e-3)
            raise RingFull(
                f"ring {self.spec.label!r} stayed full for {self.wait_s:.3f} s "
                f"(consumer stalled?); record of {n} B not written"
            )
        self._q[_DROPPED] += 1
        self._q[_DROPPED_BYTES] += n
        return False


class RingConsumer(_Attached):
    """The single reader of a ring; drains in batches and parks on the doorbell when idle."""

    def __init__(self, spec: RingSpec, *, instrument: bool, spin_us: float) -> None:
        super().__init__(spec)
        self._tail = self._q[_TAIL]
        self.instrument = instrument
        self.spin_ns = int(spin_us * 1000)
        self._hist = self._buf[_HIST * 8 : _HIST * 8 + HIST_BUCKETS * 8].cast("Q")

    @property
    def fileno(self) -> int:
        return self._bell.fd

    def pending(self) -> bool:
        """True if a record is published and not yet read."""
        return self._q[_HEAD] != self._tail

    def read_batch(self, max_records: int = 256) -> list[Record]:
        """Copy out up to `max_records` published records and release their space."""
        q, buf, mask = self._q, self._buf, self._mask
        head = q[_HEAD]
        tail = self._tail
        if head == tail:
            return []
        out: list[Record] = []
        unpack = RECORD_HEADER.unpack_from
        nbytes = 0
        while tail != head and len(out) < max_records:
            off = HEADER_BYTES + (tail & mask)
            n, kind, _flags, call_id, turn_id, seq, aux, ts = unpack(buf, off)
            tail += _align(RECORD_HEADER_BYTES + n)
            if kind == PAD_KIND:
                continue
            start = off + RECORD_HEADER_BYTES
            out.append(Record(kind, call_id, turn_id, seq, aux, ts, bytes(buf[start : start + n])))
            nbytes += n
        self._tail = tail
        q[_TAIL] = tail  # release space only after the payloads are copied out
        q[_RECORDS_OUT] += len(out)
        q[_BYTES_OUT] += nbytes
        if self.instrument and out:
            now = time.monotonic_ns()
            hist = self._hist
            for rec in out:
                hist[latency_bucket(now - rec.ts_ns)] += 1
        return out

    def arm(self) -> bool:
        """Declare the consumer parked; False (and un-parked) if data arrived meanwhile."""
        q = self._q
        q[_PARKED] = 1
        _fence()
        if q[_HEAD] != self._tail:
            q[_PARKED] = 0
            return False
        q[_PARKS] += 1
        return True

    def disarm(self) -> None:
        """Leave the parked state after a wake-up and reset the doorbell."""
        self._q[_PARKED] = 0
        self._q[_WAKES] += 1
        self._bell.drain()

    def wait(self, timeout: float | None, extra_fds: tuple[int, ...] = ()) -> list[int]:
        """Block until records are pending, an `extra_fds` fd is readable, or timeout.

        Returns the readable extra fds (empty when woken by the ring or by the timeout).
        Spins `spin_us` first (with sched_yield, so a co-scheduled producer can run).
        """
        if self._q[_HEAD] != self._tail:
            return []
        if self.spin_ns:
            end = time.monotonic_ns() + self.spin_ns
            while time.monotonic_ns() < end:
                if self._q[_HEAD] != self._tail:
                    return []
                os.sched_yield()
        if not self.arm():
            return []
        try:
            ready, _, _ = select.select([self._bell.fd, *extra_fds], [], [], timeout)
        finally:
            self.disarm()
        return [fd for fd in ready if fd != self._bell.fd]

    def close(self) -> None:
        if self._shm is not None:
            self._hist.release()
        super().close()


class RingStats(NamedTuple):
    """A snapshot of one ring's counters."""

    label: str
    capacity: int
    head: int
    tail: int
    records_in: int
    bytes_in: int
    records_out: int
    bytes_out: int
    dropped: int
    dropped_bytes: int
    peak_used: int
    parks: int
    wakes: int
    bells: int
    histogram: tuple[int, ...]

    @property
    def used(self) -> int:
        return self.head - self.tail

    @property
    def occupancy(self) -> float:
        return self.used / self.capacity if self.capacity else 0.0


def read_stats(buf: memoryview, label: str) -> RingStats:
    """Snapshot the counters of a mapped ring segment."""
    q = buf.cast("Q")
    try:
        hist = tuple(q[_HIST : _HIST + HIST_BUCKETS])
        return RingStats(
            label, q[_CAPACITY], q[_HEAD], q[_TAIL], q[_RECORDS_IN], q[_BYTES_IN], q[_RECORDS_OUT],
            q[_BYTES_OUT], q[_DROPPED], q[_DROPPED_BYTES], q[_PEAK_USED], q[_PARKS], q[_WAKES], q[_BELLS], hist,
        )
    finally:
        q.release()

"""Single-producer single-consumer ring of variable-length records in shared memory.

Memory layout of one segment (all counters are little-endian u64, free-running, never wrapped)::

    offset  cache line  field                                    written by
    ------  ----------  ---------------------------------------  ----------
       0    0           magic "VCRING01", capacity, version      owner (once)
      64    1           head (bytes published)                   producer
      72                records_in, bytes_in, dropped,           producer
                        dropped_bytes, peak_used_p, bells_rung
     128    2           tail (bytes consumed)                    consumer
     136                records_out, bytes_out, parks, wakes,    consumer
                        peak_used_c
     192    3           parked flag (1 = consumer asleep)        consumer
     512    8..39       one-way latency histogram, 256 buckets   consumer
    4096    -           data[capacity]  (capacity: power of two)

Record framing inside data (every record starts 32-byte aligned, so a pad header always fits)::

    +-------------+------+-------+---------+---------+-----+-----+--------+------------+
    | payload_len | kind | flags | call_id | turn_id | seq | aux | ts_ns  | payload... |
    |     u32     | u16  |  u16  |   u32   |   u32   | u32 | u32 |  u64   | (padded)   |
    +-------------+------+-------+---------+---------+-----+-----+--------+------------+

The header's `call_id`, `turn_id` and `seq` are a record's routing key, and the one authority
for it: AUDIO and TEXT records carry nothing else, and the telephony side routes each record to
its call and drops anything for an older turn from the header alone, without decoding the
payload. MESSAGE payloads (`ipc.messages`) still repeat `call_id`/`turn_id` (and `seq`) as
Struct fields, always equal to the header's; that copy is redundant and due to go (issue 13),
so new code reads the header.

A record never straddles the end of data: when it does not fit before the end, the producer
publishes a PAD record (kind 0xFFFF, payload_len with bit 31 set) over the remainder, then writes the record at offset 0
once there is room there (so a record as large as the whole ring still fits an empty ring).

Order of writes (what makes it safe):

1. Producer: copy payload, write record header, *then* store `head` (the publish point).
   Consumer: load `head`, *then* read headers and payloads below it, copy out, *then* store
   `tail`. On x86-64 (TSO) stores are not reordered with stores nor loads with loads, and an
   aligned 8-byte store through a memoryview is one `mov`, so this is enough there (ARM would
   need a fence before the publish and after observing `head`).
2. Doorbell handshake (Dekker): the consumer stores `parked=1` then loads `head`; the producer
   stores `head` then loads `parked`. A store followed by a load to another address *can* be
   reordered even on x86, so both sides put a full fence between them (an uncontended lock
   acquire/release, which is a locked instruction). Without it both could miss each other
   and the consumer would sleep on a published record.

    parked  head==tail  meaning                       producer after publishing
    ------  ----------  ----------------------------  -------------------------
      0        any      consumer running or spinning  nothing (no syscall)
      1        yes      consumer asleep on doorbell   rings the eventfd
      1        no       consumer about to notice      rings (a spare wake-up is harmless)

Wake-up: `RingConsumer.wait()` polls `head` for `spin_us` (with sched_yield, so a producer
sharing the vCPU runs), then parks: `parked=1`, fence, re-check, and sleeps in an epoll on the
doorbell eventfd registered edge-triggered, so a wake-up costs the producer one eventfd write
and the consumer one epoll_wait (no read to reset the counter). `AsyncRingReader` parks at once
(`arm()`/`disarm()`, level-triggered through the event loop) and never spins.

Crashes: `head` only moves past complete records, so a producer killed mid-write leaves a
partial record beyond `head` that nobody reads; a new producer resumes at `head`. `tail`
only moves after the payloads are copied out, so a new consumer resumes at `tail` and may see
again the records a killed consumer had read but not released (at-least-once). A new consumer
clears a stale `parked` flag and drains the doorbell. Counters next to `head`/`tail` are
updated right after them and may be one record off after a crash.

Defined behaviours: a record larger than the ring raises `RecordTooLarge`; on a full ring the
producer's policy decides: `DROP` (count it, return False) or `WAIT` (poll with back-off up
to a deadline, then raise `RingFull`). A producer never blocks without a deadline.

`peak_used` is honest: the consumer stores the exact occupancy it sees each time it reads a
batch (the peak of an interval is reached just before a read), the producer the exact
occupancy whenever it re-reads `tail` because the ring looked full (covers a stalled consumer);
`RingStats.peak_used` is the larger of the two.
"""

from __future__ import annotations

import enum
import mmap
import os
import select
import struct
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import NamedTuple

from ipc.doorbell import Doorbell
from ipc.shm import attach_segment, create_segment, new_segment_name, unlink_segment

MAGIC = int.from_bytes(b"VCRING01", "little")
VERSION = 2
HEADER_BYTES = 4096
PAGE_BYTES = 4096  # touched once each on attach (see _Attached)
RECORD_HEADER = struct.Struct("<IHHIIIIQ")
RECORD_HEADER_BYTES = RECORD_HEADER.size  # 32
ALIGN = 32
PAD_KIND = 0xFFFF
HIST_BUCKETS = 256
#: A parked consumer's wake-up costs ~30-35 us on a 2-vCPU KVM guest whose idle vCPU halts at
#: once (IPI + VM exit; tools/ipc_bench.py, ring_park), against ~2-3 us when the next record lands
#: while the consumer still polls from another vCPU. 20 us of sched_yield polling covers a reply
#: or the next record of a burst, and costs at most 20 us of CPU per wake-up (0.1% of a core per
#: 20 ms stream); an idle consumer pays it once, then sleeps. When producer and consumer share a
#: vCPU, both park and poll pay a process switch (~5.5-7 us); the yield lets the producer run.
DEFAULT_SPIN_US = 20.0

# u64 slot indexes into the header (byte offset // 8)
_MAGIC, _CAPACITY, _VERSION = 0, 1, 2
_HEAD, _RECORDS_IN, _BYTES_IN, _DROPPED, _DROPPED_BYTES, _PEAK_USED_P, _BELLS = 8, 9, 10, 11, 12, 13, 14
_TAIL, _RECORDS_OUT, _BYTES_OUT, _PARKS, _WAKES, _PEAK_USED_C = 16, 17, 18, 19, 20, 21
_PARKED = 24
_HIST = 64  # byte offset 512

assert RECORD_HEADER_BYTES == ALIGN

# Hot-path helpers bound once (module globals are cheaper than attribute lookups per call).
_pack_header = RECORD_HEADER.pack_into
_monotonic_ns = time.monotonic_ns
_eventfd_write = os.eventfd_write
_eventfd_read = os.eventfd_read
_sched_yield = os.sched_yield
_tuple_new = tuple.__new__
_FENCE_LOCK = threading.Lock()
_fence_acquire = _FENCE_LOCK.acquire
_fence_release = _FENCE_LOCK.release
_ALIGN_UP = 2 * ALIGN - 1  # need = (n + _ALIGN_UP) & -ALIGN == _align(RECORD_HEADER_BYTES + n)
_PAD_FLAG = 1 << 31  # set in a PAD's payload_len, so the consumer spots it from the length alone
MAX_CAPACITY = 1 << 31

# One struct per payload size unpacks a whole record, payload included, in one C call, in
# exactly `Record`'s field order: (kind, call_id, turn_id, seq, aux, ts_ns, payload).
_UNPACKERS: dict[int, Callable[[mmap.mmap, int], tuple]] = {}


def _unpacker(n: int) -> Callable[[mmap.mmap, int], tuple]:
    if len(_UNPACKERS) >= 4096:  # many distinct sizes (messages): start over, stay small
        _UNPACKERS.clear()
        _UNPACKERS.update((k, struct.Struct(f"<4xH2xIIIIQ{k}s").unpack_from) for k in _COMMON_SIZES)
    unpack = _UNPACKERS[n] = struct.Struct(f"<4xH2xIIIIQ{n}s").unpack_from
    return unpack


_COMMON_SIZES = (160, 320, 640, 1280, 7680)


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


def _fence() -> None:
    """A full memory barrier: an uncontended lock acquire/release executes locked instructions."""
    _fence_acquire()
    _fence_release()


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

    def consumer(self, *, instrument: bool = True, spin_us: float = DEFAULT_SPIN_US) -> RingConsumer:
        """The reading end. `instrument`: record one-way latency in the shared histogram
        (~0.2 us per record). `spin_us`: how long `wait()` polls (with sched_yield) before
        parking on the doorbell; 0 parks at once. See DEFAULT_SPIN_US for why it spins."""
        return RingConsumer(self, instrument=instrument, spin_us=spin_us)


class OwnedRing:
    """The owner's side of a ring: creates the segment and doorbell, and alone unlinks them.

    `close()` is the way out; a `weakref.finalize` unlinks the segment anyway if the owner is
    collected or the interpreter exits without it.
    """

    def __init__(self, label: str, capacity: int) -> None:
        if capacity < 4096 or capacity & (capacity - 1) or capacity > MAX_CAPACITY:
            raise ValueError(f"ring capacity must be a power of two in [4096, 2**31], got {capacity}")
        self.label = label
        self.name = new_segment_name(label)
        self._shm = create_segment(self.name, HEADER_BYTES + capacity)
        self._unlink = weakref.finalize(self, unlink_segment, self.name)
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
        self._unlink()

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
        if self._q[_MAGIC] != MAGIC or self._q[_CAPACITY] != spec.capacity or self._q[_VERSION] != VERSION:
            self._q.release()
            self._shm.close()
            raise RingError(f"segment {spec.name} is not a v{VERSION} voicecall ring of capacity {spec.capacity}")
        self._buf = buf
        # Slicing the mmap itself copies out in one step (a memoryview slice is an extra object).
        self._mm = self._shm._mmap  # type: ignore[attr-defined]
        # Map every page now (one byte read per page): mapped lazily, a ring's pages join this
        # process's RSS one by one as the positions first wrap past them, for minutes, which reads
        # as growth per call in a soak though the ring's size is fixed.
        self._mm[::PAGE_BYTES]
        self._cap = spec.capacity
        self._mask = spec.capacity - 1
        self._bell = spec.doorbell
        self._fd = spec.doorbell.fd
        # An end dropped without close(): release our views before SharedMemory.__del__ runs,
        # or it fails with "cannot close exported pointers exist".
        self._views: list[memoryview | dict] = [self._q]
        self._finalizer = weakref.finalize(self, _detach, self._shm, self._views)

    @property
    def closed(self) -> bool:
        return self._shm is None

    def stats(self) -> RingStats:
        return read_stats(self._buf, self.spec.label)

    def close(self) -> None:
        """Detach this process's mapping (the doorbell fd is shared with the spec's owner)."""
        if self._shm is None:
            return
        self._buf = None  # type: ignore[assignment]
        self._mm = None
        self._shm = None
        self._finalizer()


def _detach(shm: shared_memory.SharedMemory, views: list[memoryview | dict]) -> None:
    """Release our views (and close a consumer's epoll objects), then unmap."""
    for view in views:
        if isinstance(view, memoryview):
            view.release()
        else:
            for poller in view.values():
                poller.close()
            view.clear()
    try:
        shm.close()
    except BufferError:  # a view someone else took from our buffer is still alive
        pass


class RingProducer(_Attached):
    """The single writer of a ring."""

    def __init__(self, spec: RingSpec, policy: FullPolicy, wait_s: float) -> None:
        super().__init__(spec)
        self.policy = policy
        self.wait_s = wait_s
        self._head = self._q[_HEAD]  # resume where a previous producer (crashed?) left off
        self._tail_cache = self._q[_TAIL]

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
        """Publish one record; False if the ring was full and the policy is DROP.

        `ts_ns` defaults to now (`time.monotonic_ns()`); the consumer's latency histogram
        measures from it. Raises `RecordTooLarge` if the record can never fit.
        """
        head = self._head
        n = len(payload)
        need = (n + _ALIGN_UP) & -ALIGN
        pos = head & self._mask
        cap = self._cap
        if pos + need > cap or head + need - self._tail_cache > cap or type(payload) is not bytes:
            return self._write_slow(kind, payload, call_id, turn_id, seq, aux, ts_ns)
        # Fast path: bytes payload, fits before the end of data, room known without reading tail.
        off = pos + HEADER_BYTES
        mm = self._mm
        mm[off + 32 : off + 32 + n] = payload
        _pack_header(mm, off, n, kind, 0, call_id, turn_id, seq, aux, _monotonic_ns() if ts_ns is None else ts_ns)
        head += need
        self._head = head
        q = self._q
        q[8] = head  # _HEAD: publish
        _fence_acquire()  # Dekker: the head store must be visible before we read `parked`
        _fence_release()
        if q[24]:  # _PARKED
            try:
                _eventfd_write(self._fd, 1)
            except BlockingIOError:  # counter saturated: the consumer is awake anyway
                pass
            q[14] += 1  # _BELLS
        q[9] += 1  # _RECORDS_IN
        q[10] += n  # _BYTES_IN
        return True

    def _write_slow(
        self, kind: int, payload: object, call_id: int, turn_id: int, seq: int, aux: int, ts_ns: int | None
    ) -> bool:
        """Non-bytes payloads, wrap-around (PAD), and a ring that looks full."""
        if type(payload) is not bytes:
            payload = memoryview(payload).cast("B")  # type: ignore[arg-type]
        n = len(payload)  # type: ignore[arg-type]
        need = (n + _ALIGN_UP) & -ALIGN
        cap = self._cap
        if need > cap:
            raise RecordTooLarge(
                f"record of {n} B needs {need} B but ring {self.spec.label!r} holds {cap} B; "
                f"raise the ring's capacity or split the payload"
            )
        pos = self._head & self._mask
        contiguous = cap - pos
        if need > contiguous:
            # Publish a PAD over the rest of data first, then place the record at offset 0.
            if not self._reserve(contiguous, n):
                return False
            pad_len = _PAD_FLAG | (contiguous - RECORD_HEADER_BYTES)
            _pack_header(self._mm, HEADER_BYTES + pos, pad_len, PAD_KIND, 0, 0, 0, 0, 0, 0)
            self._head += contiguous
            self._publish()
            pos = 0
        if not self._reserve(need, n):
            return False
        off = pos + HEADER_BYTES
        mm = self._mm
        mm[off + RECORD_HEADER_BYTES : off + RECORD_HEADER_BYTES + n] = payload
        _pack_header(mm, off, n, kind, 0, call_id, turn_id, seq, aux, _monotonic_ns() if ts_ns is None else ts_ns)
        self._head += need
        self._publish()
        q = self._q
        q[_RECORDS_IN] += 1
        q[_BYTES_IN] += n
        return True

    def _publish(self) -> None:
        q = self._q
        q[_HEAD] = self._head
        _fence()
        if q[_PARKED]:
            try:
                _eventfd_write(self._fd, 1)
            except BlockingIOError:
                pass
            q[_BELLS] += 1

    def _reserve(self, size: int, n: int) -> bool:
        """True once `size` bytes are free; otherwise apply the full-ring policy."""
        cap = self._cap
        if self._head + size - self._tail_cache <= cap:
            return True
        if self._refresh_tail(size):
            return True
        if self.policy is FullPolicy.WAIT:
            deadline = time.monotonic() + self.wait_s
            spins = 0
            pause = 20e-6
            while True:
                if spins < 64:  # a busy consumer frees space within microseconds
                    spins += 1
                    _sched_yield()
                else:
                    time.sleep(pause)
                    pause = min(pause * 2, 2e-3)
                if self._refresh_tail(size):
                    return True
                if time.monotonic() >= deadline:
                    raise RingFull(
                        f"ring {self.spec.label!r} stayed full for {self.wait_s:.3f} s "
                        f"(consumer stalled?); record of {n} B not written"
                    )
        q = self._q
        q[_DROPPED] += 1
        q[_DROPPED_BYTES] += n
        return False

    def _refresh_tail(self, size: int) -> bool:
        q = self._q
        self._tail_cache = tail = q[_TAIL]
        used = self._head - tail
        if used > q[_PEAK_USED_P]:
            q[_PEAK_USED_P] = used
        return used + size <= self._cap


class RingConsumer(_Attached):
    """The single reader of a ring; drains in batches and parks on the doorbell when idle."""

    def __init__(self, spec: RingSpec, *, instrument: bool, spin_us: float) -> None:
        super().__init__(spec)
        self._tail = self._q[_TAIL]  # resume where a previous consumer (crashed?) left off
        self.instrument = instrument
        self.spin_ns = int(spin_us * 1000)
        self._u32 = self._buf.cast("I")
        self._peak = self._q[_PEAK_USED_C]
        self._pollers: dict[tuple[int, ...], select.epoll] = {}
        self._views += [self._u32, self._pollers]  # released by _detach (never a bound method: no cycle)
        # A consumer that died parked leaves parked=1 and maybe a rung bell: start clean.
        self._q[_PARKED] = 0
        self._drain()

    @property
    def fileno(self) -> int:
        return self._fd

    def pending(self) -> bool:
        """True if a record is published and not yet read."""
        return self._q[_HEAD] != self._tail

    def read_batch(self, max_records: int = 256) -> list[Record]:
        """Copy out up to `max_records` published records and release their space."""
        q = self._q
        head = q[8]  # _HEAD
        tail = start_tail = self._tail
        if head == tail:
            return []
        mm, u32, mask, unpackers = self._mm, self._u32, self._mask, _UNPACKERS
        out: list[Record] = []
        append = out.append
        nbytes = count = 0
        if self.instrument:
            now = _monotonic_ns()
            hist = _HIST
        else:
            now = hist = 0
        while tail < head:
            off = (tail & mask) + HEADER_BYTES
            n = u32[off >> 2]
            if n >= _PAD_FLAG:  # PAD: skip to the start of data
                tail += ((n - _PAD_FLAG) + _ALIGN_UP) & -ALIGN
                continue
            tail += (n + _ALIGN_UP) & -ALIGN
            try:
                unpack = unpackers[n]
            except KeyError:
                unpack = _unpacker(n)
            rec = _tuple_new(Record, unpack(mm, off))
            append(rec)
            nbytes += n
            count += 1
            if hist:
                d = now - rec[5]
                if d >= 8:
                    bl = d.bit_length()
                    q[hist + (bl << 2) + ((d >> (bl - 3)) & 3) - 4] += 1
                else:
                    q[hist + (d if d > 0 else 0)] += 1
            if count == max_records:
                break
        if tail > head:
            raise RingError(f"ring {self.spec.label!r} is corrupt: a record runs past head ({tail} > {head})")
        self._tail = tail
        q[16] = tail  # _TAIL: release space only after the payloads are copied out
        q[17] += count  # _RECORDS_OUT
        q[18] += nbytes  # _BYTES_OUT
        used = head - start_tail
        if used > self._peak:
            self._peak = q[_PEAK_USED_C] = used
        return out

    def arm(self) -> bool:
        """Declare the consumer parked; False (and un-parked) if data arrived meanwhile."""
        q = self._q
        q[_PARKED] = 1
        _fence_acquire()  # Dekker: `parked` must be visible before we read head
        _fence_release()
        if q[_HEAD] != self._tail:
            q[_PARKED] = 0
            return False
        q[_PARKS] += 1
        return True

    def disarm(self) -> None:
        """Leave the parked state after a wake-up and reset the doorbell."""
        q = self._q
        q[_PARKED] = 0
        self._drain()
        q[_WAKES] += 1

    def _drain(self) -> None:
        try:
            _eventfd_read(self._fd)
        except BlockingIOError:
            pass

    def wait(self, timeout: float | None, extra_fds: tuple[int, ...] = ()) -> list[int]:
        """Block until records are pending, an `extra_fds` fd is readable, or timeout.

        Returns the readable extra fds (empty when woken by the ring or by the timeout).
        Spins `spin_us` first (with sched_yield, so a co-scheduled producer can run).
        """
        q = self._q
        tail = self._tail
        if q[_HEAD] != tail:
            return []
        if self.spin_ns:
            end = _monotonic_ns() + self.spin_ns
            while _monotonic_ns() < end:
                if q[_HEAD] != tail:
                    return []
                _sched_yield()
        q[_PARKED] = 1
        _fence_acquire()
        _fence_release()
        if q[_HEAD] != tail:
            q[_PARKED] = 0
            return []
        poller = self._pollers.get(extra_fds)
        if poller is None:
            poller = self._poller(extra_fds)
        events = poller.poll(-1.0 if timeout is None else timeout)
        q[_PARKED] = 0
        q[_PARKS] += 1
        q[_WAKES] += 1
        if not extra_fds:
            return []
        fd = self._fd
        return [efd for efd, _ in events if efd != fd]

    def _poller(self, extra_fds: tuple[int, ...]) -> select.epoll:
        # The doorbell is edge-triggered: every ring is one event, so a wake-up needs no
        # read() to reset the eventfd (one syscall fewer per hop); the counter just grows
        # (it would take centuries to saturate). `disarm()` still drains it for level-
        # triggered waiters (asyncio). Extra fds are level-triggered, as callers expect.
        if len(self._pollers) >= 8:
            self._close_pollers()
        poller = select.epoll(1 + len(extra_fds))
        poller.register(self._fd, select.EPOLLIN | select.EPOLLET)
        for fd in extra_fds:
            poller.register(fd, select.EPOLLIN)
        self._pollers[extra_fds] = poller
        return poller

    def _close_pollers(self) -> None:
        for poller in self._pollers.values():
            poller.close()
        self._pollers.clear()


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
            q[_BYTES_OUT], q[_DROPPED], q[_DROPPED_BYTES], max(q[_PEAK_USED_P], q[_PEAK_USED_C]),
            q[_PARKS], q[_WAKES], q[_BELLS], hist,
        )
    finally:
        q.release()

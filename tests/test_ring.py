"""The ring in one process: framing against a model, wrap-around, full-ring policies, crashes."""

from __future__ import annotations

import array
import gc
import sys
import threading
import time
import warnings
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipc.ring import (
    ALIGN,
    HEADER_BYTES,
    RECORD_HEADER_BYTES,
    FullPolicy,
    OwnedRing,
    Record,
    RecordTooLarge,
    RingFull,
    bucket_lower_ns,
    latency_bucket,
)
from tests.waiting import wait_until

CAP = 4096


def _need(n: int) -> int:
    return (RECORD_HEADER_BYTES + n + ALIGN - 1) // ALIGN * ALIGN


@pytest.fixture
def ring():
    with OwnedRing("unit", CAP) as r:
        yield r


def test_round_trip_keeps_every_field(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    before = time.monotonic_ns()
    assert prod.write(3, b"abc", call_id=7, turn_id=8, seq=9, aux=10)
    assert prod.write(4, b"", call_id=1, ts_ns=123)
    a, b = cons.read_batch()
    assert isinstance(a, Record) and (a.kind, a.call_id, a.turn_id, a.seq, a.aux, a.payload) == (3, 7, 8, 9, 10, b"abc")
    assert before <= a.ts_ns <= time.monotonic_ns()
    assert b == Record(4, 1, 0, 0, 0, 123, b"")
    assert cons.read_batch() == [] and not cons.pending()
    prod.close()
    cons.close()


def _rss_shmem_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssShmem:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_an_attached_end_maps_the_whole_ring_at_once() -> None:
    """RSS must not creep as a ring first wraps (a soak read that as growth per call)."""
    with OwnedRing("pages", 1 << 22) as r:
        before = _rss_shmem_kib()
        cons = r.spec.consumer()
        assert _rss_shmem_kib() - before >= 4096
        cons.close()


def test_payload_types_are_copied_as_bytes(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    pcm = array.array("h", [1, -2, 3000])
    prod.write(1, bytearray(b"ba"))
    prod.write(1, memoryview(pcm))  # 3 int16 samples = 6 bytes, not 3
    prod.write(1, memoryview(b"0123456789")[2:5])
    got = [r.payload for r in cons.read_batch()]
    assert got == [b"ba", pcm.tobytes(), b"234"] and all(type(p) is bytes for p in got)
    prod.close()
    cons.close()


def test_wrap_around_pads_and_keeps_order(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    big = CAP // 2 + 100  # more than half the ring: never two at once
    sent = []
    for i in range(50):
        payload = bytes([i]) * (big if i % 3 == 0 else 500 + i)
        assert prod.write(1, payload, seq=i)
        sent.append(payload)
        assert [r.payload for r in cons.read_batch()] == [payload]
    stats = ring.stats()
    assert stats.head == stats.tail > 10 * CAP and stats.records_out == 50
    assert stats.bytes_out == sum(map(len, sent))
    prod.close()
    cons.close()


def test_an_end_dropped_without_close_is_released_quietly(ring: OwnedRing, monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[Any] = []  # what a failing __del__ would report (a BufferError from SharedMemory's)
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    assert prod.write(1, b"x")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del prod, cons
        gc.collect()
    assert unraisable == [] and [str(w.message) for w in caught] == []
    cons = ring.spec.consumer()  # the ring itself is untouched: the unread record is still there
    assert [r.payload for r in cons.read_batch()] == [b"x"]
    cons.close()


def test_record_as_large_as_the_ring_fits_an_empty_ring_after_a_wrap(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    assert prod.write(1, b"x" * 100)
    assert len(cons.read_batch()) == 1
    whole = b"w" * (CAP - RECORD_HEADER_BYTES)
    # The PAD goes first, then the record waits for the PAD's space (WAIT), or drops (DROP).
    assert not prod.write(2, whole)
    assert cons.read_batch() == []  # consumes the PAD
    assert prod.write(2, whole)
    assert [r.payload for r in cons.read_batch()] == [whole]
    prod.close()
    cons.close()


def test_oversize_record_raises(ring: OwnedRing) -> None:
    prod = ring.spec.producer(FullPolicy.WAIT)
    with pytest.raises(RecordTooLarge, match="holds 4096 B"):
        prod.write(1, b"x" * (CAP - RECORD_HEADER_BYTES + 1))
    assert ring.stats().head == 0
    prod.close()


def test_drop_policy_counts_drops_and_bytes(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(FullPolicy.DROP), ring.spec.consumer()
    fits = CAP // _need(300)
    results = [prod.write(1, b"d" * 300) for _ in range(fits + 5)]
    assert results == [True] * fits + [False] * 5
    stats = ring.stats()
    assert (stats.dropped, stats.dropped_bytes, stats.records_in) == (5, 1500, fits)
    assert stats.peak_used == stats.used == CAP  # the last try published a PAD over the tail end
    assert len(cons.read_batch(1000)) == fits
    assert prod.write(1, b"d" * 300)  # room again
    prod.close()
    cons.close()


def test_wait_policy_raises_at_its_deadline(ring: OwnedRing) -> None:
    prod = ring.spec.producer(FullPolicy.WAIT, wait_s=0.1)
    while prod.write(1, b"f" * 1000) if ring.stats().used + _need(1000) <= CAP else False:
        pass
    t0 = time.monotonic()
    with pytest.raises(RingFull, match="stayed full for 0.100 s"):
        prod.write(1, b"f" * 1000)
    assert 0.1 <= time.monotonic() - t0 < 1.0
    assert ring.stats().dropped == 0
    prod.close()


def test_wait_policy_succeeds_when_the_consumer_frees_space(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(FullPolicy.WAIT, wait_s=5.0), ring.spec.consumer()
    for _ in range(CAP // _need(1000)):
        assert prod.write(1, b"f" * 1000)
    reader = threading.Timer(0.05, cons.read_batch)
    reader.start()
    t0 = time.monotonic()
    assert prod.write(1, b"g" * 1000)
    assert 0.04 <= time.monotonic() - t0 < 2.0
    reader.join()
    assert [r.payload for r in cons.read_batch()] == [b"g" * 1000]
    prod.close()
    cons.close()


def test_peak_used_is_exact_not_a_stale_estimate(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    for _ in range(3):
        prod.write(1, b"p" * 100)
        cons.read_batch()
    assert ring.stats().peak_used == _need(100)  # never more than one record in the ring
    for _ in range(2):
        prod.write(1, b"p" * 100)
    cons.read_batch()
    assert ring.stats().peak_used == 2 * _need(100)
    prod.close()
    cons.close()


def test_producer_resumes_after_a_crash_at_the_published_head(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    prod.write(1, b"one", seq=1)
    # a half-written record beyond head (what a killed producer leaves) is never seen
    prod._mm[HEADER_BYTES + _need(3) : HEADER_BYTES + _need(3) + 8] = b"\xff" * 8
    prod.close()
    prod2 = ring.spec.producer()
    prod2.write(1, b"two", seq=2)
    assert [(r.seq, r.payload) for r in cons.read_batch()] == [(1, b"one"), (2, b"two")]
    prod2.close()
    cons.close()


def test_consumer_resumes_after_a_crash_and_clears_a_stale_park(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer()
    prod.write(1, b"a")
    assert len(cons.read_batch()) == 1
    prod.write(1, b"b")
    assert cons.arm() is False  # data pending: refuses to park
    cons.read_batch()
    assert cons.arm() is True  # parked... and then the consumer dies without disarming
    cons.close()
    cons2 = ring.spec.consumer()
    bells = ring.stats().bells
    prod.write(1, b"c")
    assert ring.stats().bells == bells  # the stale park was cleared: no syscall per write
    assert [r.payload for r in cons2.read_batch()] == [b"c"]
    prod.close()
    cons2.close()


def test_parked_consumer_is_rung_and_busy_one_is_not(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer(spin_us=0)
    prod.write(1, b"x")
    cons.read_batch()
    assert ring.stats().bells == 0
    woke = []
    t = threading.Thread(target=lambda: woke.append(cons.wait(5.0)))
    t.start()
    wait_until(lambda: cons._q[24], 5, "the consumer to park", poll_s=0.001)
    prod.write(1, b"y")
    t.join(5.0)
    assert woke == [[]] and ring.stats().bells == 1
    assert [r.payload for r in cons.read_batch()] == [b"y"]
    prod.close()
    cons.close()


def test_histogram_buckets_are_monotonic_and_invertible() -> None:
    prev = -1
    for ns in [0, 1, 7, 8, 9, 15, 16, 100, 1000, 10**6, 10**9, 2**62]:
        b = latency_bucket(ns)
        assert b >= prev and bucket_lower_ns(b) <= ns
        prev = b
    assert latency_bucket(-5) == 0


def test_instrument_off_leaves_the_histogram_empty(ring: OwnedRing) -> None:
    prod, cons = ring.spec.producer(), ring.spec.consumer(instrument=False)
    prod.write(1, b"x")
    cons.read_batch()
    assert sum(ring.stats().histogram) == 0
    prod.close()
    cons.close()


# ---------------------------------------------------------------- property test against a model

_sizes = st.one_of(st.integers(0, 300), st.integers(CAP // 2 - 32, CAP - RECORD_HEADER_BYTES))
_ops = st.lists(st.one_of(st.tuples(st.just("w"), _sizes), st.tuples(st.just("r"), st.integers(1, 6))), max_size=60)


class _Model:
    """The ring's contract, in plain Python: free-running head/tail, PAD before a wrapped record."""

    def __init__(self) -> None:
        self.head = self.tail = 0
        self.items: deque[tuple[str, int, bytes]] = deque()

    def write(self, size: int, payload: bytes) -> bool:
        need = _need(size)
        pos = self.head % CAP
        if need > CAP - pos:
            if self.head + (CAP - pos) - self.tail > CAP:
                return False
            self.items.append(("pad", CAP - pos, b""))
            self.head += CAP - pos
        if self.head + need - self.tail > CAP:
            return False
        self.items.append(("rec", need, payload))
        self.head += need
        return True

    def read(self, max_records: int) -> list[bytes]:
        out = []
        while self.items and len(out) < max_records:
            kind, size, payload = self.items.popleft()
            self.tail += size
            if kind == "rec":
                out.append(payload)
        return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_framing_matches_the_model(ops: list[tuple[str, int]]) -> None:
    with OwnedRing("prop", CAP) as r:
        prod, cons = r.spec.producer(FullPolicy.DROP), r.spec.consumer()
        model = _Model()
        drops = 0
        for i, (op, arg) in enumerate(ops):
            if op == "w":
                payload = bytes([i % 251]) * arg
                ok = prod.write(5, payload, seq=i, aux=arg)
                assert ok == model.write(arg, payload)
                drops += not ok
            else:
                got = cons.read_batch(arg)
                assert [rec.payload for rec in got] == model.read(arg)
                assert all(rec.aux == len(rec.payload) and rec.kind == 5 for rec in got)
            stats = r.stats()
            assert (stats.head, stats.tail, stats.dropped) == (model.head, model.tail, drops)
        assert [rec.payload for rec in cons.read_batch(10_000)] == model.read(10_000)
        prod.close()
        cons.close()

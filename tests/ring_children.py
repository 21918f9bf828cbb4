"""Entry points of the spawned processes the ring tests start (importable by a `spawn` child).

Payloads are self-checking: the first 8 bytes are a blake2b digest of the rest, so a torn or
half-written record is detected wherever it is read.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from multiprocessing.connection import Connection

from ipc import messages as m
from ipc.channel import ControlChannel
from ipc.doorbell import Doorbell
from ipc.ring import FullPolicy, RingSpec

KIND_DATA = 7
LARGE_EVERY = 97  # roughly 1% of stress records are larger than half the ring


def digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8).digest()


def make_payload(blob: bytes, rng: random.Random, size: int) -> bytes:
    """A self-checking payload of `size` bytes (>= 8) cut from a random blob."""
    off = rng.randrange(len(blob) - size)
    body = blob[off : off + size - 8]
    return digest(body) + body


def check_payload(payload: bytes) -> bool:
    return len(payload) >= 8 and payload[:8] == digest(payload[8:])


def stress_sizes(rng: random.Random, count: int, capacity: int) -> list[int]:
    """Mostly audio-sized records, some large ones, ~1% over half the ring."""
    sizes = []
    for i in range(count):
        if i % LARGE_EVERY == LARGE_EVERY - 1:
            sizes.append(rng.randrange(capacity // 2, capacity - 64))
        elif i % 13 == 0:
            sizes.append(rng.randrange(8, 8192))
        else:
            sizes.append(rng.randrange(8, 700))
    return sizes


def stress_producer(spec: RingSpec, seed: int, count: int, result: Connection) -> None:
    """Write `count` self-checking records; report the running hash of all payloads."""
    rng = random.Random(seed)
    blob = rng.randbytes(1 << 17)
    sizes = stress_sizes(rng, count, spec.capacity)
    prod = spec.producer(FullPolicy.WAIT, wait_s=20.0)
    total = hashlib.blake2b()
    for seq, size in enumerate(sizes):
        payload = make_payload(blob, rng, size)
        total.update(payload)
        assert prod.write(KIND_DATA, payload, call_id=seed & 0xFFFF, turn_id=1, seq=seq, aux=size)
    prod.close()
    result.send((count, total.hexdigest()))
    result.close()


def stress_consumer(spec: RingSpec, count: int, deadline_s: float, result: Connection) -> None:
    """Read until `count` records came; check order, sizes and every payload's digest."""
    cons = spec.consumer()
    total = hashlib.blake2b()
    seen = bad = 0
    deadline = time.monotonic() + deadline_s
    while seen < count and time.monotonic() < deadline:
        batch = cons.read_batch(512)
        if not batch:
            cons.wait(0.5)
            continue
        for rec in batch:
            if rec.seq != seen or rec.aux != len(rec.payload) or rec.kind != KIND_DATA or not check_payload(rec.payload):
                bad += 1
            total.update(rec.payload)
            seen += 1
    stats = cons.stats()
    cons.close()
    result.send((seen, bad, total.hexdigest(), stats.parks, stats.peak_used))
    result.close()


def endless_producer(spec: RingSpec, seed: int, ready: Connection) -> None:
    """Write self-checking records (some large) as fast as the ring allows, until killed."""
    rng = random.Random(seed)
    blob = rng.randbytes(1 << 17)
    prod = spec.producer(FullPolicy.WAIT, wait_s=60.0)
    seq = 0
    ready.send(os.getpid())
    while True:
        size = rng.randrange(spec.capacity // 4, spec.capacity // 2) if seq % 5 == 0 else rng.randrange(8, 2000)
        prod.write(KIND_DATA, make_payload(blob, rng, size), seq=seq)
        seq += 1


def slow_consumer(spec: RingSpec, ready: Connection) -> None:
    """Read a little, report, then sit parked until killed."""
    cons = spec.consumer()
    got = 0
    while got < 10:
        batch = cons.read_batch()
        got += len(batch)
        if not batch:
            cons.wait(1.0)
    ready.send(got)
    while True:
        cons.wait(1.0)  # never reads again: the ring fills up behind us


def ring_bell(bell: Doorbell, times: int) -> None:
    for _ in range(times):
        bell.ring()
        time.sleep(0.01)


def wait_bell(bell: Doorbell, result: Connection) -> None:
    result.send("waiting")
    result.send(bell.wait(10.0))


def attach_write_exit(spec: RingSpec, count: int) -> None:
    """Attach both ends in a child, use them, and exit without cleanup of the segment."""
    prod = spec.producer()
    for i in range(count):
        prod.write(KIND_DATA, b"x" * 64, seq=i)
    prod.close()


def paced_producer(spec: RingSpec, bursts: int, per_burst: int, gap_s: float) -> None:
    """Bursts of records separated by idle gaps (so an asyncio reader parks between them)."""
    prod = spec.producer(FullPolicy.WAIT, wait_s=10.0)
    seq = 0
    for _ in range(bursts):
        for _ in range(per_burst):
            assert prod.write(KIND_DATA, seq.to_bytes(4, "little") * 40, seq=seq)
            seq += 1
        time.sleep(gap_s)
    prod.close()


def channel_echo(conn: Connection) -> None:
    """Answer HealthCheck with HealthReply until Stop."""
    chan = ControlChannel(conn, m.ToChild)
    while True:
        msg = chan.recv(10.0)
        if msg is None or isinstance(msg, m.Stop):
            break
        if isinstance(msg, m.HealthCheck):
            chan.send(m.HealthReply(nonce=msg.nonce, worker="echo"))
    chan.close()


def sleep_forever(conn: Connection) -> None:
    chan = ControlChannel(conn, m.ToChild)
    chan.send(m.Ready(worker="sleeper", load_s=0.0))
    time.sleep(60)

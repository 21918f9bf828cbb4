"""The ring across real processes started with `spawn`: stress, peer crashes, doorbell, tracker."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ipc.doorbell import Doorbell
from ipc.ring import FullPolicy, OwnedRing
from ipc.shm import leftover_segments
from tests import ring_children as rc
from tests.waiting import wait_until

CTX = mp.get_context("spawn")
REPO = Path(__file__).resolve().parents[1]


def _start(target, *args, name: str) -> mp.Process:  # noqa: ANN001 - any child entry point
    proc = CTX.Process(target=target, args=args, name=name, daemon=True)
    proc.start()
    return proc


def _reap(*procs: mp.Process) -> None:
    for proc in procs:
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)


def _recv(conn, timeout: float, what: str):  # noqa: ANN001, ANN202
    assert conn.poll(timeout), f"no {what} within {timeout} s"
    return conn.recv()


def test_stress_spawned_producer_and_consumer(seed: int) -> None:
    count = 300_000
    with OwnedRing("stress", 1 << 16) as ring:
        p_recv, p_send = CTX.Pipe(duplex=False)
        c_recv, c_send = CTX.Pipe(duplex=False)
        cons = _start(rc.stress_consumer, ring.spec, count, 60.0, c_send, name="ring-stress-consumer")
        prod = _start(rc.stress_producer, ring.spec, seed, count, p_send, name="ring-stress-producer")
        try:
            p_send.close()
            c_send.close()
            sent, sent_hash = _recv(p_recv, 60.0, "producer result")
            seen, bad, got_hash, parks, peak = _recv(c_recv, 60.0, "consumer result")
        finally:
            _reap(prod, cons)
        stats = ring.stats()
    assert (sent, seen, bad) == (count, count, 0)
    assert got_hash == sent_hash
    assert stats.records_in == stats.records_out == count and stats.dropped == 0
    assert stats.head > 10 * ring.spec.capacity  # wrapped many times
    assert ring.spec.capacity // 2 < peak <= ring.spec.capacity  # large records, honest peak
    assert prod.exitcode == 0 and cons.exitcode == 0


def test_producer_killed_mid_stream_leaves_only_complete_records(seed: int) -> None:
    with OwnedRing("kill_prod", 1 << 16) as ring:
        ready_r, ready_w = CTX.Pipe(duplex=False)
        prod = _start(rc.endless_producer, ring.spec, seed, ready_w, name="ring-endless-producer")
        cons = ring.spec.consumer()
        try:
            _recv(ready_r, 30.0, "producer start")
            expected = 0
            deadline = time.monotonic() + 0.3 + (seed % 100) / 1000  # kill at a seed-dependent moment
            while time.monotonic() < deadline:
                for rec in cons.read_batch():
                    assert rec.seq == expected and rc.check_payload(rec.payload)
                    expected += 1
                cons.wait(0.05)
            os.kill(prod.pid, signal.SIGKILL)
            prod.join(5.0)
            assert prod.exitcode == -signal.SIGKILL
            while batch := cons.read_batch():  # everything published before the kill, intact
                for rec in batch:
                    assert rec.seq == expected and rc.check_payload(rec.payload)
                    expected += 1
            assert expected > 10
            assert not cons.pending()
            # A new producer resumes at the published head, over whatever half record was left.
            prod2 = ring.spec.producer()
            assert prod2.write(rc.KIND_DATA, rc.digest(b"again") + b"again", seq=expected)
            (rec,) = cons.read_batch()
            assert rec.seq == expected and rec.payload.endswith(b"again")
            prod2.close()
        finally:
            _reap(prod)
            cons.close()


def test_consumer_killed_producer_drops_and_owner_unlinks() -> None:
    ring = OwnedRing("kill_cons", 1 << 14)
    name = ring.name
    ready_r, ready_w = CTX.Pipe(duplex=False)
    cons = _start(rc.slow_consumer, ring.spec, ready_w, name="ring-slow-consumer")
    prod = ring.spec.producer(FullPolicy.DROP)
    try:
        for i in range(10):
            assert prod.write(rc.KIND_DATA, b"hello" * 10, seq=i)
        assert _recv(ready_r, 30.0, "consumer progress") == 10
        os.kill(cons.pid, signal.SIGKILL)
        cons.join(5.0)
        written = dropped = 0
        for i in range(1000):
            if prod.write(rc.KIND_DATA, b"z" * 200, seq=i):
                written += 1
            else:
                dropped += 1
        stats = ring.stats()
        assert dropped > 0 and stats.dropped == dropped and stats.dropped_bytes == 200 * dropped
        assert stats.used <= ring.spec.capacity and stats.peak_used <= ring.spec.capacity
        # WAIT gives up at its deadline with a clear error, instead of blocking forever.
        waiting = ring.spec.producer(FullPolicy.WAIT, wait_s=0.05)
        with pytest.raises(Exception, match="stayed full"):
            waiting.write(rc.KIND_DATA, b"z" * 200)
        waiting.close()
    finally:
        prod.close()
        _reap(cons)
        ring.close()
    assert name not in leftover_segments()


def test_doorbell_crosses_spawn_boundary() -> None:
    bell = Doorbell()
    try:
        ringer = _start(rc.ring_bell, bell, 1, name="bell-ringer")
        assert bell.wait(20.0), "the child's ring never arrived"
        _reap(ringer)
        res_r, res_w = CTX.Pipe(duplex=False)
        waiter = _start(rc.wait_bell, bell, res_w, name="bell-waiter")
        res_w.close()
        assert _recv(res_r, 20.0, "waiter start") == "waiting"  # a ring before its wait would count too
        bell.ring()
        assert _recv(res_r, 20.0, "waiter result") is True
        _reap(waiter)
    finally:
        bell.close()


def test_ring_wakes_parked_consumer_across_processes_with_extra_fd() -> None:
    with OwnedRing("wake", 1 << 14) as ring:
        cons = ring.spec.consumer(spin_us=0)
        r, w = os.pipe()
        try:
            assert cons.wait(0.01, (r,)) == []  # timeout
            os.write(w, b"!")
            assert cons.wait(1.0, (r,)) == [r]  # extra fd readable
            os.read(r, 1)
            child = _start(rc.paced_producer, ring.spec, 1, 1, 0.0, name="ring-one-record")

            def arrived() -> list:
                got = cons.read_batch()
                if not got:
                    cons.wait(5.0, (r,))  # parked until the producer rings
                return got

            got = wait_until(arrived, 20, "the child's record", poll_s=0)
            _reap(child)
            assert len(got) == 1
            assert ring.stats().bells >= 1  # the consumer was parked: the producer rang
        finally:
            os.close(r)
            os.close(w)
            cons.close()


def test_attach_in_child_never_registers_with_resource_tracker(tmp_path: Path) -> None:
    """A spawned child attaches and exits: no 'leaked shared_memory' warning, segment intact."""
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import multiprocessing as mp, sys
        sys.path.insert(0, {str(REPO)!r})
        from ipc.ring import OwnedRing
        from tests import ring_children as rc

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            with OwnedRing("tracker", 1 << 14) as ring:
                for _ in range(2):
                    p = ctx.Process(target=rc.attach_write_exit, args=(ring.spec, 5))
                    p.start(); p.join(30)
                    assert p.exitcode == 0, p.exitcode
                cons = ring.spec.consumer()  # still there after the children exited
                assert len(cons.read_batch()) == 10
                cons.close()
            print("owner done")
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "owner done" in proc.stdout
    assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr

"""The transports `voicecall ipc-bench` compares and the echo child it spawns for each.

See voicecall/cli/ipc_bench.py for the method.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass
from multiprocessing import reduction
from typing import Any

from ipc.ring import FullPolicy, OwnedRing, RingSpec

SIZES = (160, 640, 7680, 65536)
RING_BYTES = 1 << 20
PIPE_BYTES = 1 << 20
QUEUE_ITEMS = 1024
CASE_DEADLINE_S = 30.0
F_SETPIPE_SZ = 1031
_LEN = struct.Struct("<I")
TS = struct.Struct("<Q")

# message tags (first payload byte)
PING, DATA, END, ACK, PACED, REPORT, IDLE, WAKE, QUIT = b"PDEAsRIWQ"


class Aborted(Exception):
    """A case overran its deadline or the peer died."""


# ---------------------------------------------------------------- transport endpoints


class _Fd:
    """A raw fd that crosses a spawn boundary (duplicated into the child while pickling)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return _rebuild_fd, (reduction.DupFd(self.fd),)


def _rebuild_fd(dup: Any) -> _Fd:
    return _Fd(dup.detach())


class Endpoint:
    """One side of a duplex link: send bytes, receive a batch of bytes."""

    abort_flag: threading.Event | None = None

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv_many(self) -> list[bytes]:
        raise NotImplementedError

    _pending: list[bytes]

    def recv(self) -> bytes:
        if self._pending:
            return self._pending.pop()
        got = self.recv_many()
        if len(got) > 1:
            self._pending = got[:0:-1]  # reversed rest, popped from the end
        return got[0]

    def close(self) -> None:
        pass


class RingEndpoint(Endpoint):
    def __init__(self, out_spec: RingSpec, in_spec: RingSpec, mode: str, spin_us: float, instrument: bool) -> None:
        self._p = out_spec.producer(FullPolicy.WAIT, wait_s=CASE_DEADLINE_S)
        spin = spin_us if mode == "spin" else 0.0
        self._c = in_spec.consumer(instrument=instrument, spin_us=spin)
        self._poll = mode == "poll"
        self._write = self._p.write
        self._read = self._c.read_batch
        self._pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self._write(1, data)

    def recv_many(self) -> list[bytes]:
        read, c, flag = self._read, self._c, self.abort_flag
        while True:
            recs = read(256)
            if recs:
                return [r[6] for r in recs]
            if self._poll:
                pending, yld, spins = c.pending, os.sched_yield, 0
                while not pending():
                    yld()
                    spins += 1
                    if not spins & 0xFFFF and flag is not None and flag.is_set():
                        raise Aborted("ring receive aborted")
            else:
                c.wait(0.5)
                if flag is not None and flag.is_set():
                    raise Aborted("ring receive aborted")

    def close(self) -> None:
        self._p.close()
        self._c.close()


class QueueEndpoint(Endpoint):
    def __init__(self, out_q: Any, in_q: Any) -> None:
        self._out, self._in = out_q, in_q
        self._pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self._out.put(data)

    def recv_many(self) -> list[bytes]:
        got = self._in.get()
        if got is None:
            raise Aborted("queue receive aborted")
        return [got]

    def close(self) -> None:
        self._out.cancel_join_thread()
        self._out.close()


class PipeEndpoint(Endpoint):
    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self._conn.send_bytes(data)

    def recv_many(self) -> list[bytes]:
        try:
            return [self._conn.recv_bytes()]
        except (EOFError, OSError) as exc:
            raise Aborted(f"pipe receive failed: {exc}") from exc

    def close(self) -> None:
        self._conn.close()


class OsPipeEndpoint(Endpoint):
    """Raw os.pipe pair with a 4-byte little-endian length prefix."""

    def __init__(self, wfd: int, rfd: int) -> None:
        self._w, self._r = wfd, rfd
        self._buf = bytearray()
        self._pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        n = os.writev(self._w, (_LEN.pack(len(data)), data))
        total = len(data) + 4
        if n < total:  # partial write (signal): finish it
            rest = (_LEN.pack(len(data)) + data)[n:]
            while rest:
                rest = rest[os.write(self._w, rest):]

    def recv_many(self) -> list[bytes]:
        buf = self._buf
        while True:
            out: list[bytes] = []
            off, end = 0, len(buf)
            while end - off >= 4:
                (n,) = _LEN.unpack_from(buf, off)
                if end - off - 4 < n:
                    break
                out.append(bytes(buf[off + 4 : off + 4 + n]))
                off += 4 + n
            if off:
                del buf[:off]
            if out:
                return out
            data = os.read(self._r, PIPE_BYTES)
            if not data:
                raise Aborted("os pipe closed")
            buf += data

    def close(self) -> None:
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass(frozen=True)
class Transport:
    name: str
    label: str
    throughput: bool = True


TRANSPORTS = (
    Transport("ring_spin", "ring, default consumer: sched_yield poll for --spin-us, then park on the doorbell"),
    Transport("ring_spin_noinst", "ring_spin with the latency histogram off", throughput=False),
    Transport("ring_park", "ring, park on the doorbell at once (spin_us=0)"),
    Transport("ring_poll", "ring, yield poll (never parks)"),
    Transport("mp_queue", "multiprocessing.Queue"),
    Transport("mp_pipe", "multiprocessing.Pipe"),
    Transport("os_pipe", "os.pipe + length prefix"),
)
PACED_TRANSPORTS = ("ring_spin", "ring_park", "mp_queue", "mp_pipe", "os_pipe")
IDLE_TRANSPORTS = ("ring_spin", "ring_park", "ring_poll", "mp_queue")


class Link:
    """Both endpoints of one transport: the parent's and the (picklable) child's recipe."""

    def __init__(self, ctx: Any, name: str, spin_us: float) -> None:
        self.name = name
        self._owned: list[OwnedRing] = []
        self._child_fds: list[int] = []
        self._parent_in_q: Any = None
        if name.startswith("ring"):
            mode = {"ring_park": "park", "ring_poll": "poll"}.get(name, "spin")
            instrument = not name.endswith("noinst")
            a, b = OwnedRing("bench_a", RING_BYTES), OwnedRing("bench_b", RING_BYTES)
            self._owned = [a, b]
            self.parent = RingEndpoint(a.spec, b.spec, mode, spin_us, instrument)
            self.child_args: tuple = ("ring", b.spec, a.spec, mode, spin_us, instrument)
        elif name == "mp_queue":
            to_child, to_parent = ctx.Queue(QUEUE_ITEMS), ctx.Queue(QUEUE_ITEMS)
            self._parent_in_q = to_parent
            self.parent = QueueEndpoint(to_child, to_parent)
            self.child_args = ("queue", to_parent, to_child)
        elif name == "mp_pipe":
            mine, theirs = ctx.Pipe(duplex=True)
            self.parent = PipeEndpoint(mine)
            self._theirs = theirs
            self.child_args = ("pipe", theirs)
        elif name == "os_pipe":
            r1, w1 = os.pipe()  # parent -> child
            r2, w2 = os.pipe()  # child -> parent
            for fd in (w1, w2):
                try:
                    import fcntl

                    fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
                except OSError:
                    pass
            self.parent = OsPipeEndpoint(w1, r2)
            self._child_fds = [w2, r1]
            self.child_args = ("ospipe", _Fd(w2), _Fd(r1))
        else:
            raise ValueError(f"unknown transport {name!r}")

    def after_start(self) -> None:
        """Close the parent's copies of the child's ends (so a dead child reads as EOF)."""
        for fd in self._child_fds:
            os.close(fd)
        self._child_fds = []
        if self.name == "mp_pipe":
            self._theirs.close()

    def abort(self) -> None:
        """Unblock a parent stuck in receive (the child was killed)."""
        if self._parent_in_q is not None:
            try:
                self._parent_in_q.put_nowait(None)
            except Exception:  # noqa: BLE001 - full or closed: the get will fail anyway
                pass

    def close(self) -> None:
        self.parent.close()
        for fd in self._child_fds:
            os.close(fd)
        if self._parent_in_q is not None:
            self._parent_in_q.cancel_join_thread()
            self._parent_in_q.close()
        for ring in self._owned:
            ring.close()


def _child_endpoint(args: tuple) -> Endpoint:
    kind = args[0]
    if kind == "ring":
        return RingEndpoint(*args[1:])
    if kind == "queue":
        return QueueEndpoint(args[1], args[2])
    if kind == "pipe":
        return PipeEndpoint(args[1])
    return OsPipeEndpoint(args[1].fd, args[2].fd)


# ---------------------------------------------------------------- the child (echo server)


def child_main(args: tuple, parent_pid: int) -> None:
    """Echo pings, count data, time paced records, report idle CPU, until QUIT."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl+C and kills us

    def watch_parent() -> None:
        while True:
            time.sleep(0.25)
            if os.getppid() != parent_pid:
                os._exit(3)

    threading.Thread(target=watch_parent, name="bench-parent-watch", daemon=True).start()
    ep = _child_endpoint(args)
    count = 0
    paced: list[int] = []
    paced_cpu0 = paced_wall0 = 0.0
    try:
        while True:
            for msg in ep.recv_many():
                tag = msg[0]
                if tag == PING:
                    ep.send(msg)
                elif tag == DATA:
                    count += 1
                elif tag == END:
                    ep.send(bytes((ACK,)) + TS.pack(count))
                    count = 0
                elif tag == PACED:
                    now = time.monotonic_ns()
                    if not paced:
                        paced_cpu0, paced_wall0 = time.process_time(), time.monotonic()
                    paced.append(now - TS.unpack_from(msg, 1)[0])
                elif tag == REPORT:
                    cpu = (time.process_time() - paced_cpu0) / max(time.monotonic() - paced_wall0, 1e-9)
                    ep.send(bytes((REPORT,)) + json.dumps({"lat_ns": paced, "cpu": cpu}).encode())
                    paced = []
                elif tag == IDLE:
                    cpu0, wall0 = time.process_time(), time.monotonic()
                    ep.recv()  # the parent sends WAKE after the idle spell
                    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
                    ep.send(bytes((IDLE,)) + TS.pack(int(cpu * 1e9)))
                elif tag == QUIT:
                    return
    finally:
        ep.close()

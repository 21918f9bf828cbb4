"""IPC benchmark: our shared-memory ring (each wake-up mode) against stock transports, same run.

    voicecall ipc-bench                  # ~1.5 min: 3 interleaved rounds, table + acceptance checks
    voicecall ipc-bench --quick          # ~20 s: fewer rounds, shorter cases
    voicecall ipc-bench --json out.json  # also write every number as JSON

Method (as in research/ipc.md): each round spawns one echo child per transport, in an order
rotated every round, and measures for 160 B, 640 B, 7680 B and 64 KiB records
- one-way latency = ping-pong round trip / 2 (p50, p99), after a warm-up;
- throughput = records streamed for a fixed time until the child acknowledges the count.
Tables show the median over rounds; ratios to `multiprocessing.Queue` are taken inside each
round (same load) and their median is shown. Then, one child per transport:
- paced: one record every 20 ms stamped with `time.monotonic_ns()`, true one-way latency at the
  parked consumer, and the consumer's CPU share;
- idle: the consumer waits for a few seconds with nothing to read; its CPU share.
Finally the ring consumer's latency histogram (`consumer(instrument=True)`) is timed in-process
against `instrument=False` and reported as a share of the ring's one-way latency.

Transports: ring_spin (the default consumer: sched_yield poll for `--spin-us`, then park on the eventfd
doorbell), ring_park (park at once), ring_poll (sched_yield poll, never parks), ring_spin_noinst
(ring_spin with the histogram off; latency only), mp_queue, mp_pipe, os_pipe (4-byte length prefix).
Every child is spawned, ignores Ctrl+C, exits when its parent disappears, and is killed by the
parent if a case overruns its deadline; rings are unlinked on any exit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipc.ring import DEFAULT_SPIN_US, OwnedRing
from voicecall.cli.ipc_bench_transports import (
    ACK,
    CASE_DEADLINE_S,
    DATA,
    END,
    IDLE,
    IDLE_TRANSPORTS,
    PACED,
    PACED_TRANSPORTS,
    PING,
    QUIT,
    REPORT,
    RING_BYTES,
    SIZES,
    TRANSPORTS,
    TS,
    WAKE,
    Aborted,
    Endpoint,
    Link,
    child_main,
)
from voicecall.percentiles import percentile

# ---------------------------------------------------------------- the parent side


class Child:
    """A spawned echo child with its link, a per-case deadline watchdog, and sure cleanup."""

    def __init__(self, ctx: Any, name: str, spin_us: float) -> None:
        self.link = Link(ctx, name, spin_us)
        self.flag = threading.Event()
        self.link.parent.abort_flag = self.flag
        self.proc = ctx.Process(
            target=child_main, args=(self.link.child_args, os.getpid()), name=f"ipc-bench-{name}", daemon=True
        )
        self.proc.start()
        self.link.after_start()
        self._timer: threading.Timer | None = None
        self.case(CASE_DEADLINE_S)  # the child is up once it echoes (spawn takes a while)
        ping_pong(self.link.parent, 64, 0.0, 1, warmup=20)
        self.disarm()

    def case(self, seconds: float) -> Child:
        """Arm the watchdog for the next case (kills the child if it overruns)."""
        self.disarm()
        self._timer = threading.Timer(seconds, self._overrun)
        self._timer.daemon = True
        self._timer.start()
        return self

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _overrun(self) -> None:
        self.flag.set()
        if self.proc.is_alive():
            self.proc.kill()
        self.link.abort()

    def close(self) -> None:
        self.disarm()
        if self.proc.is_alive() and not self.flag.is_set():
            try:
                self.case(3.0)
                self.link.parent.send(bytes((QUIT,)))
            except Exception:  # noqa: BLE001 - the child may already be gone
                pass
        self.proc.join(3.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2.0)
        self.disarm()
        self.link.close()


def ping_pong(ep: Endpoint, size: int, seconds: float, max_iters: int, warmup: int = 200) -> dict[str, float]:
    msg = bytes((PING,)) + bytes(size - 1)
    send, recv, clock = ep.send, ep.recv, time.perf_counter_ns
    for _ in range(warmup):
        send(msg)
        recv()
    rtts: list[int] = []
    append = rtts.append
    end = clock() + int(seconds * 1e9)
    for _ in range(max_iters):
        t0 = clock()
        send(msg)
        got = recv()
        t1 = clock()
        append(t1 - t0)
        if t1 > end:
            break
    if len(got) != size:
        raise Aborted(f"echo of {size} B came back as {len(got)} B")
    return {"p50_us": percentile(rtts, 50) / 2e3, "p99_us": percentile(rtts, 99) / 2e3, "n": len(rtts)}


def throughput(ep: Endpoint, size: int, seconds: float) -> dict[str, float]:
    msg = bytes((DATA,)) + bytes(size - 1)
    send, clock = ep.send, time.perf_counter
    sent = 0
    t0 = clock()
    end = t0 + seconds
    while True:
        for _ in range(64):
            send(msg)
        sent += 64
        if clock() > end:
            break
    ep.send(bytes((END,)))
    reply = ep.recv()
    dt = clock() - t0
    (got,) = TS.unpack_from(reply, 1)
    if reply[0] != ACK or got != sent:
        raise Aborted(f"throughput: sent {sent} records, the child counted {got}")
    return {"msgs_s": sent / dt, "mb_s": sent * size / dt / 1e6, "n": sent}


def paced(ep: Endpoint, size: int, count: int, period_s: float) -> dict[str, Any]:
    body = bytes(size - 9)
    nxt = time.monotonic() + period_s
    for _ in range(count):
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        nxt += period_s
        ep.send(bytes((PACED,)) + TS.pack(time.monotonic_ns()) + body)
    time.sleep(period_s)
    ep.send(bytes((REPORT,)))
    reply = json.loads(ep.recv()[1:])
    lat = reply["lat_ns"]
    if len(lat) != count:
        raise Aborted(f"paced: sent {count} records, the child saw {len(lat)}")
    return {"p50_us": percentile(lat, 50) / 1e3, "p99_us": percentile(lat, 99) / 1e3, "max_us": max(lat) / 1e3,
            "cpu_pct": reply["cpu"] * 100, "n": count}


def idle_cpu(ep: Endpoint, seconds: float) -> float:
    ep.send(bytes((IDLE,)))
    time.sleep(seconds)
    ep.send(bytes((WAKE,)))
    (ppb,) = TS.unpack_from(ep.recv(), 1)
    return ppb / 1e7  # % of a core


def instrument_cost(blocks: int = 40, records: int = 1000) -> dict[str, float]:
    """ns per record that the consume-time latency histogram adds (single-record batches).

    Blocks with the histogram on and off alternate, and each side keeps its fastest block:
    interference from other processes only ever adds time, so the minima compare cleanly.
    """
    best = {False: float("inf"), True: float("inf")}
    with OwnedRing("bench_inst_off", RING_BYTES) as off_ring, OwnedRing("bench_inst_on", RING_BYTES) as on_ring:
        ends = {}
        for instrument, ring in ((False, off_ring), (True, on_ring)):
            ends[instrument] = (ring.spec.producer(), ring.spec.consumer(instrument=instrument))
        payload = bytes(160)
        clock = time.perf_counter_ns
        for _ in range(blocks):
            for instrument in (False, True):
                prod, cons = ends[instrument]
                write, read = prod.write, cons.read_batch
                t0 = clock()
                for _ in range(records):
                    write(1, payload)
                    read(1)
                best[instrument] = min(best[instrument], (clock() - t0) / records)
        for prod, cons in ends.values():
            prod.close()
            cons.close()
    return {"write_read_ns_off": best[False], "write_read_ns_on": best[True],
            "histogram_ns": best[True] - best[False]}


# ---------------------------------------------------------------- running and reporting


def run(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    names = [t.name for t in TRANSPORTS if t.name in args.transports]
    tput = {t.name for t in TRANSPORTS if t.throughput}
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        result: dict[str, Any] = {"round": r, "order": order, "loadavg": os.getloadavg()[0], "cases": {}}
        for name in order:
            child = Child(ctx, name, args.spin_us)
            try:
                per_size = {}
                for size in args.sizes:
                    progress(f"round {r + 1}/{args.rounds}: {name} {size} B")
                    case: dict[str, Any] = {}
                    child.case(CASE_DEADLINE_S)
                    case["lat"] = ping_pong(child.link.parent, size, args.pingpong_s, args.max_iters)
                    if name in tput:
                        case["tput"] = throughput(child.link.parent, size, args.tput_s)
                    child.disarm()
                    per_size[size] = case
                result["cases"][name] = per_size
            finally:
                child.close()
        rounds.append(result)
    extra: dict[str, Any] = {"paced": {}, "idle": {}}
    for name in [n for n in PACED_TRANSPORTS if n in names] + [n for n in IDLE_TRANSPORTS if n in names]:
        child = Child(ctx, name, args.spin_us)
        try:
            if name in PACED_TRANSPORTS and name not in extra["paced"]:
                progress(f"paced: {name}, one {args.paced_size} B record every {args.period_ms:g} ms")
                child.case(CASE_DEADLINE_S + args.paced_s)
                count = max(int(args.paced_s * 1000 / args.period_ms), 10)
                extra["paced"][name] = paced(child.link.parent, args.paced_size, count, args.period_ms / 1000)
            if name in IDLE_TRANSPORTS and name not in extra["idle"]:
                idle_s = args.idle_s if name != "ring_poll" else min(args.idle_s, 0.5)
                progress(f"idle consumer: {name} for {idle_s:g} s")
                child.case(CASE_DEADLINE_S + idle_s)
                extra["idle"][name] = idle_cpu(child.link.parent, idle_s)
            child.disarm()
        finally:
            child.close()
    progress("histogram cost, in-process")
    extra["instrument"] = instrument_cost()
    return {"rounds": rounds, **extra}


def summarize(data: dict[str, Any], base: str = "mp_queue") -> dict[str, Any]:
    """Median over rounds of each metric, and median of same-round ratios to `base`."""
    summary: dict[str, Any] = {}
    rounds = data["rounds"]
    names = rounds[0]["order"]
    for name in names:
        for size in rounds[0]["cases"][name]:
            row: dict[str, Any] = {}
            for metric, key in (("lat", "p50_us"), ("lat", "p99_us"), ("tput", "msgs_s"), ("tput", "mb_s")):
                vals = [rd["cases"][name][size][metric][key] for rd in rounds if metric in rd["cases"][name][size]]
                if not vals:
                    continue
                row[key] = statistics.median(vals)
                if base in rounds[0]["cases"] and key != "mb_s":
                    ratios = [rd["cases"][name][size][metric][key] / rd["cases"][base][size][metric][key]
                              for rd in rounds if metric in rd["cases"][name][size]]
                    row[f"{key}_x"] = statistics.median(ratios)
            summary.setdefault(name, {})[size] = row
    return summary


def checks(data: dict[str, Any], summary: dict[str, Any], ring: str = "ring_spin") -> list[tuple[str, bool, str]]:
    """The ring budgets (one-way p50 <= 6 us, p99 <= 15 us, >= 3.5x faster and >= 3x the throughput of multiprocessing.Queue, idle consumer <= 2% of a core) as acceptance targets, evaluated on this run for the default ring consumer."""
    out: list[tuple[str, bool, str]] = []
    rows = summary.get(ring, {})
    for size in (160, 640, 7680):
        row = rows.get(size)
        if not row:
            continue
        out.append((f"{ring} {size} B one-way p50 <= 6 us", row["p50_us"] <= 6.0, f"{row['p50_us']:.2f} us"))
        out.append((f"{ring} {size} B one-way p99 <= 15 us", row["p99_us"] <= 15.0, f"{row['p99_us']:.2f} us"))
        if "p50_us_x" in row:
            speed = 1 / row["p50_us_x"]
            out.append((f"{ring} {size} B p50 >= 3.5x faster than mp.Queue", speed >= 3.5, f"{speed:.1f}x"))
        if "msgs_s_x" in row:
            out.append((f"{ring} {size} B throughput >= 3x mp.Queue", row["msgs_s_x"] >= 3.0,
                        f"{row['msgs_s_x']:.1f}x"))
    for name in (ring, "ring_park"):
        if name in data["idle"]:
            cpu = data["idle"][name]
            out.append((f"{name} idle consumer <= 2% of a core", cpu <= 2.0, f"{cpu:.2f}%"))
    inst = data.get("instrument")
    for size in (160, 7680):
        if inst and size in rows:
            share = inst["histogram_ns"] / (rows[size]["p50_us"] * 1e3) * 100
            out.append((f"latency histogram < 10% of {ring} one-way p50 ({size} B)", share < 10.0,
                        f"{inst['histogram_ns']:.0f} ns = {share:.1f}%"))
    return out


def render(data: dict[str, Any], summary: dict[str, Any], results: list[tuple[str, bool, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    labels = {t.name: t.label for t in TRANSPORTS}
    sizes = list(next(iter(summary.values())).keys())
    n_rounds = len(data["rounds"])
    lat = Table(title=f"One-way latency, ping-pong RTT/2, us: p50 / p99 (x mp.Queue p50), median of {n_rounds} rounds")
    tput = Table(title="Throughput: msgs/s (MB/s) (x mp.Queue, same round)")
    for table in (lat, tput):
        table.add_column("transport")
        for size in sizes:
            table.add_column(f"{size} B", justify="right")
    for name, rows in summary.items():
        lat.add_row(name, *[f"{rows[s]['p50_us']:.2f} / {rows[s]['p99_us']:.1f} ({rows[s].get('p50_us_x', 0):.2f}x)"
                            for s in sizes])
        if "msgs_s" in rows[sizes[0]]:
            tput.add_row(name, *[f"{rows[s]['msgs_s'] / 1e3:,.0f}k ({rows[s]['mb_s']:,.0f}) "
                                 f"({rows[s].get('msgs_s_x', 0):.2f}x)" for s in sizes])
    console.print(lat)
    # Placement decides much: two processes on one vCPU pay a process switch per hop, and a
    # halted idle vCPU costs ~30 us to wake. Per-round values show which rounds got which.
    for name in summary:
        per_round = [" ".join(f"{rd['cases'][name][s]['lat']['p50_us']:.1f}" for rd in data["rounds"]) for s in sizes]
        console.print(f"  per-round p50 us, {name}: " + " | ".join(per_round), highlight=False)
    console.print(tput)
    if data["paced"] or data["idle"]:
        extra = Table(title="Paced (1 record / period, consumer parked, true one-way) and idle consumer CPU")
        for col in ("transport", "paced p50 us", "paced p99 us", "paced max us", "paced consumer CPU %",
                    "idle consumer CPU %"):
            extra.add_column(col, justify="right" if col != "transport" else "left")
        for name in dict.fromkeys([*data["paced"], *data["idle"]]):
            p = data["paced"].get(name)
            idle = data["idle"].get(name)
            extra.add_row(name, *(f"{p[k]:,.1f}" for k in ("p50_us", "p99_us", "max_us")) if p else ("-",) * 3,
                          f"{p['cpu_pct']:.2f}" if p else "-", f"{idle:.2f}" if idle is not None else "-")
        console.print(extra)
    inst = data["instrument"]
    console.print(f"latency histogram at consume time: {inst['histogram_ns']:.0f} ns per record "
                  f"(write+read {inst['write_read_ns_off']:.0f} ns off, {inst['write_read_ns_on']:.0f} ns on)")
    console.print("transports: " + "; ".join(f"{n} = {labels[n]}" for n in summary))
    verdict = Table(title="Acceptance (ring budgets)")
    verdict.add_column("check")
    verdict.add_column("measured", justify="right")
    verdict.add_column("ok")
    for what, ok, got in results:
        verdict.add_row(what, got, "[green]yes[/]" if ok else "[red]NO[/]")
    console.print(verdict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~20 s: 2 rounds, shorter cases")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES),
                    help="record sizes in bytes, comma-separated")
    ap.add_argument("--transports", type=lambda s: s.split(","), default=[t.name for t in TRANSPORTS],
                    help="comma-separated subset of: " + ",".join(t.name for t in TRANSPORTS))
    ap.add_argument("--spin-us", type=float, default=DEFAULT_SPIN_US, help="ring_spin: spin budget before parking (us)")
    ap.add_argument("--period-ms", type=float, default=20.0, help="paced run: one record every this many ms")
    ap.add_argument("--paced-size", type=int, default=160, help="paced run: record size in bytes")
    ap.add_argument("--json", type=Path, help="write all results to this JSON file")
    ap.add_argument("--strict", action="store_true", help="exit 1 if an acceptance check fails")
    args = ap.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    args.pingpong_s = 0.12 if args.quick else 0.4
    args.max_iters = 20000
    args.tput_s = 0.12 if args.quick else 0.3
    args.paced_s = 1.0 if args.quick else 2.5
    args.idle_s = 1.0 if args.quick else 2.0
    unknown = set(args.transports) - {t.name for t in TRANSPORTS}
    if unknown:
        ap.error(f"unknown transports {sorted(unknown)}")
    if min(args.sizes) < 16:
        ap.error("record sizes must be >= 16 B")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl+C and SIGTERM unwind through every `finally` (children killed, rings unlinked), even
    # when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    t0 = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("starting")
        try:
            data = run(args, lambda what: bar.update(task, description=what))
        except KeyboardInterrupt:
            bar.stop()
            print("interrupted: children killed, rings unlinked", file=sys.stderr)
            return 130
    summary = summarize(data)
    results = checks(data, summary)
    render(data, summary, results)
    print(f"{time.monotonic() - t0:.0f} s, python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"loadavg {os.getloadavg()[0]:.2f}")
    if args.json:
        meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                "wall_s": time.monotonic() - t0, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                           for k, v in vars(args).items()}}
        doc = {"meta": meta, **data, "summary": summary,
               "checks": [{"check": c, "ok": ok, "measured": m} for c, ok, m in results]}
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    return 1 if args.strict and not all(ok for _, ok, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())

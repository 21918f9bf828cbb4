"""Channel statistics as data: ring snapshots, histogram percentiles, interval deltas.

A ring's counters and one-way latency histogram live in its shared header (see ipc/ring.py),
so any process attached to it can read them without asking the producer or consumer. This
module turns a `RingStats` into a JSON-able snapshot (served at `/debug/ipc`) and computes
what `tools/ipc_top.py` shows from two snapshots: rates, percentiles over the interval.
"""

from __future__ import annotations

from typing import Any

from ipc.ring import HIST_BUCKETS, RingStats, bucket_lower_ns

#: Who produces and consumes each ring of the running system (see voicecall/topology.py).
RING_ENDS = {
    "stt_in": ("telephony", "stt", "audio+requests"),
    "stt_out": ("stt", "telephony", "events"),
    "llm_in": ("telephony", "llm", "requests"),
    "llm_out": ("llm", "telephony", "tokens+events"),
    "tts_in": ("telephony", "tts", "requests"),
    "tts_out": ("tts", "telephony", "audio+events"),
}


def ring_snapshot(stats: RingStats) -> dict[str, Any]:
    """Everything `ipc_top` needs about one ring, at one instant."""
    producer, consumer, kind = RING_ENDS.get(stats.label, ("?", "?", "ring"))
    hist = list(stats.histogram)
    while hist and hist[-1] == 0:
        hist.pop()
    return {
        "channel": stats.label, "type": "ring", "producer": producer, "consumer": consumer, "kind": kind,
        "capacity": stats.capacity, "used": stats.used, "occupancy": round(stats.occupancy, 6),
        "peak_used": stats.peak_used, "records_in": stats.records_in, "records_out": stats.records_out,
        "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out, "dropped": stats.dropped,
        "dropped_bytes": stats.dropped_bytes, "parks": stats.parks, "wakes": stats.wakes, "bells": stats.bells,
        "histogram": hist,
    }


def percentile_ns(hist: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a latency histogram, at its bucket's lower bound (ns)."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank and n:
            return bucket_lower_ns(i)
    return bucket_lower_ns(len(hist) - 1)


def interval(prev: dict[str, Any] | None, cur: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Rates and percentiles of one channel between two snapshots (`prev` None: since start)."""
    def delta(key: str) -> int:
        return cur.get(key, 0) - (prev.get(key, 0) if prev else 0)

    hist_now = cur.get("histogram", [])
    hist_then = prev.get("histogram", []) if prev else []
    hist = [n - (hist_then[i] if i < len(hist_then) else 0) for i, n in enumerate(hist_now)]
    secs = max(seconds, 1e-9)
    p50, p99 = percentile_ns(hist, 0.5), percentile_ns(hist, 0.99)
    return {
        "channel": cur["channel"], "type": cur.get("type", "ring"), "producer": cur.get("producer", "?"),
        "consumer": cur.get("consumer", "?"), "kind": cur.get("kind", ""),
        "records_per_s": delta("records_out") / secs, "bytes_per_s": delta("bytes_out") / secs,
        "p50_us": None if p50 is None else p50 / 1e3, "p99_us": None if p99 is None else p99 / 1e3,
        "occupancy": cur.get("occupancy", 0.0), "peak_used": cur.get("peak_used", 0),
        "dropped": cur.get("dropped", 0), "dropped_per_s": delta("dropped") / secs,
        "wakes_per_s": delta("wakes") / secs, "records_total": cur.get("records_out", 0),
    }


PROMETHEUS_BOUNDS_S = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0)


def prometheus_histogram(hist: list[int] | tuple[int, ...]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs and an approximate sum (s) from a ring's log-bucket histogram.

    A ring bucket counts toward `le` only when it lies wholly below it, so counts are never
    overstated; the sum uses each bucket's lower bound.
    """
    counts = list(hist) + [0] * (HIST_BUCKETS - len(hist))
    out = []
    for bound in PROMETHEUS_BOUNDS_S:
        limit = bound * 1e9
        out.append((repr(bound), float(sum(n for i, n in enumerate(counts) if bucket_lower_ns(i + 1) <= limit))))
    out.append(("+Inf", float(sum(counts))))
    total_s = sum(n * bucket_lower_ns(i) for i, n in enumerate(counts)) / 1e9
    return out, total_s

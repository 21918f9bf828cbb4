"""Prometheus metrics of the telephony process: per-stage latency, calls, barge-ins, drops.

Stage names are `voicecall/latency.py`'s (README "Latency"); each observes the gap between two stamps of a turn.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from voicecall.latency import TurnStamps, stage_latencies_ms

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)


class CallMetrics:
    """One registry per telephony process, exposed at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage = Histogram(
            "voicecall_stage_seconds", "Latency of one pipeline stage of a turn", ["stage"], buckets=_BUCKETS, registry=r
        )
        self.calls_live = Gauge("voicecall_calls_live", "Calls in progress", registry=r)
        self.calls_total = Counter("voicecall_calls", "Calls accepted", registry=r)
        self.calls_refused = Counter("voicecall_calls_refused", "Calls refused (busy, not ready, draining)", registry=r)
        self.turns_total = Counter("voicecall_turns", "Caller turns answered", registry=r)
        self.barge_ins = Counter("voicecall_barge_ins", "Agent speech interrupted by the caller", registry=r)
        self.false_barge_ins = Counter("voicecall_false_barge_ins", "Short caller sounds that did not interrupt", registry=r)
        self.fallbacks = Counter("voicecall_fallbacks", "Turns answered by the fallback or an apology", ["reason"], registry=r)
        self.dropped = Counter("voicecall_dropped_frames", "Audio frames dropped", ["where"], registry=r)
        self.worker_restarts = Counter("voicecall_worker_restarts", "Worker restarts seen", ["worker"], registry=r)

    def observe_turn(self, stamps: TurnStamps) -> None:
        """Observe every stage whose two stamps are known and ordered."""
        for name, ms in stage_latencies_ms(stamps).items():
            self.stage.labels(name).observe(ms / 1e3)

"""Prometheus metrics of the telephony process: per-stage latency, calls, barge-ins, drops.

Stage names follow DESIGN.md §7; each histogram observes the gap between two stamps of a turn.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: (metric suffix, from stamp, to stamp)
STAGES: tuple[tuple[str, str, str], ...] = (
    ("endpointing", "speech_end_ns", "turn_end_ns"),
    ("stt_final", "turn_end_ns", "stt_final_ns"),
    ("llm_first_token", "stt_final_ns", "llm_first_token_ns"),
    ("first_clause", "llm_first_token_ns", "first_clause_ns"),
    ("tts_first_audio", "first_clause_ns", "tts_first_audio_ns"),
    ("first_media_sent", "tts_first_audio_ns", "first_media_sent_ns"),
    ("first_mark_echoed", "first_media_sent_ns", "first_mark_echoed_ns"),
    ("turn_end_to_first_media", "turn_end_ns", "first_media_sent_ns"),
    ("voice_to_voice", "speech_end_ns", "first_media_sent_ns"),
    ("heard_latency", "speech_end_ns", "first_mark_echoed_ns"),
)
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

    def observe_turn(self, stamps: dict[str, int]) -> None:
        """Observe every stage whose two stamps are known and ordered."""
        for name, start, end in STAGES:
            a, b = stamps.get(start), stamps.get(end)
            if a and b and b >= a:
                self.stage.labels(name).observe((b - a) / 1e9)

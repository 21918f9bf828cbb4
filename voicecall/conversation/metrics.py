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
        self.barge_in_stop = Histogram(
            "voicecall_barge_in_stop_seconds", "Caller speech over the agent until its audio is cleared, in two parts: "
            "detect (the onset frame's arrival to the stt worker's onset, its min_speech_ms included) and deliver "
            "(that onset to clear sent)", ["part"], buckets=_BUCKETS, registry=r)
        self.echo_ignored = Counter("voicecall_echo_onsets_ignored", "Caller-speech onsets that were the agent's "
                                    "own audio coming back on the line (stt.vad.echo_explained_db): no barge-in",
                                    registry=r)
        self.false_barge_ins = Counter("voicecall_false_barge_ins", "Short caller sounds that did not interrupt", registry=r)
        self.fallbacks = Counter("voicecall_fallbacks", "Turns answered by the fallback or an apology", ["reason"], registry=r)
        self.wait_fillers = Counter("voicecall_wait_fillers", "\"One moment.\" said because an answer was late "
                                    "(call.wait_filler)", ["why"], registry=r)
        self.dropped = Counter("voicecall_dropped_frames", "Audio frames dropped", ["where"], registry=r)
        self.speculative = Counter("voicecall_speculative_turns", "Replies prepared at a caller's pause, by outcome "
                                   "(started, used, discarded)", ["outcome"], registry=r)
        self.backchannels = Counter("voicecall_backchannels", "Caller sounds over the agent that were backchannels "
                                    "or no words: the answer resumed", registry=r)
        self.went_on = Counter("voicecall_caller_went_on", "Caller turns continued right after the answer "
                               "began: the answer dropped, both parts answered as one turn", registry=r)
        self.turn_ends = Counter("voicecall_turn_ends", "Caller turns by what ended them (model: Smart Turn and "
                                 "the transcript; rules: transcript alone; model_failed: the model failed at "
                                 "run time; forced: no pause for stt.commit_after_ms)", ["by"], registry=r)
        self.turn_check = Histogram("voicecall_smart_turn_check_seconds", "Cost of one Smart Turn check",
                                    buckets=_BUCKETS, registry=r)
        self.worker_restarts = Counter("voicecall_worker_restarts", "Worker restarts seen", ["worker"], registry=r)

    def observe_turn_end(self, turn_prob: float, check_ms: float, model_failed: bool, forced: bool) -> None:
        """Count what decided a caller's turn end (from the stt worker's TurnEnded)."""
        by = "forced" if forced else "model_failed" if model_failed else "model" if turn_prob >= 0 else "rules"
        self.turn_ends.labels(by).inc()
        if turn_prob >= 0:
            self.turn_check.observe(check_ms / 1e3)

    def observe_turn(self, stamps: TurnStamps) -> None:
        """Observe every stage whose two stamps are known and ordered."""
        for name, ms in stage_latencies_ms(stamps).items():
            self.stage.labels(name).observe(ms / 1e3)

"""Where a turn's milliseconds went: stage latencies and waterfall segments from its stamps.

The stamps are DESIGN §7's (plus the receive stamps that show IPC hops); they live in the call
records and in a live `CallSession`. `/metrics`, the softphone's /calls page, `tools/calls.py`,
`tools/trace.py` and the latency benchmark all read them through these two functions, so every
view agrees. Pure functions over a mapping: no I/O, nothing heavy imported.
"""

from __future__ import annotations

from collections.abc import Mapping

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

#: (label, from stamp, to stamp, kind) in pipeline order; kind "ipc" marks a process hop
SEGMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("caller speech", "speech_start_ns", "speech_end_ns", "caller"),
    ("endpoint wait", "speech_end_ns", "turn_end_ns", "stt"),
    ("STT final", "turn_end_ns", "stt_final_ns", "stt"),
    ("ipc stt->telephony", "stt_final_ns", "stt_final_recv_ns", "ipc"),
    ("LLM first token", "stt_final_recv_ns", "llm_first_token_ns", "llm"),
    ("ipc llm->telephony", "llm_first_token_ns", "llm_first_token_recv_ns", "ipc"),
    ("first clause", "llm_first_token_recv_ns", "first_clause_ns", "telephony"),
    ("TTS first audio", "first_clause_ns", "tts_first_audio_ns", "tts"),
    ("ipc tts->telephony", "tts_first_audio_ns", "tts_first_audio_recv_ns", "ipc"),
    ("first media sent", "tts_first_audio_recv_ns", "first_media_sent_ns", "telephony"),
    ("first mark echoed", "first_media_sent_ns", "first_mark_echoed_ns", "caller"),
)


def stage_latencies_ms(stamps: Mapping[str, int | None]) -> dict[str, float]:
    """Every stage of `STAGES` whose two stamps are known and ordered, in ms (0.1 ms resolution)."""
    out = {}
    for name, a, b in STAGES:
        ta, tb = stamps.get(a), stamps.get(b)
        if ta and tb and tb >= ta:
            out[name] = round((tb - ta) / 1e6, 1)
    return out


def turn_segments(stamps: Mapping[str, int | None]) -> list[dict]:
    """The waterfall of one agent turn: known segments in pipeline order, ms from speech end."""
    base = stamps.get("speech_end_ns") or None
    out = []
    for label, a, b, kind in SEGMENTS:
        ta, tb = stamps.get(a), stamps.get(b)
        if not ta or not tb or tb < ta:
            continue
        base = base or ta
        out.append({"stage": label, "kind": kind, "start_ms": (ta - base) / 1e6, "ms": (tb - ta) / 1e6})
    return out

"""Where a turn's milliseconds went: the turn's stamps, its stage latencies and waterfall segments.

The stamps are a turn's monotonic clock readings (plus the receive stamps that show IPC hops),
spelled once, in `TurnStamps`: a live `CallSession` fills one per turn, and the call records keep
one column per field (`voicecall.records.STAMPS`). `/metrics`, the softphone's /calls page,
`tools/calls.py`, `tools/trace.py` and the latency benchmark all read them through these two
functions, so every view agrees. Pure functions over `TurnStamps` or a mapping of the same names
(a record row): no I/O, nothing heavy imported.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class TurnStamps(msgspec.Struct, kw_only=True):
    """One turn's monotonic stamps (ns); 0 means not (yet) known. Field order = record columns."""

    speech_start_ns: int = 0  # caller speech began (speech end minus its media duration)
    speech_end_ns: int = 0  # arrival of the last voiced inbound frame
    turn_end_ns: int = 0  # the endpoint was decided
    stt_final_ns: int = 0  # the final transcript was ready (stt worker)
    stt_final_recv_ns: int = 0  # ...and reached telephony
    llm_first_token_ns: int = 0  # the first token was in the ring (llm worker)
    llm_first_token_recv_ns: int = 0  # ...and reached telephony
    first_clause_ns: int = 0  # the first clause went to the tts worker
    tts_first_audio_ns: int = 0  # the first audio was in the ring (tts worker)
    tts_first_audio_recv_ns: int = 0  # ...and reached telephony
    first_media_sent_ns: int = 0  # the first frame of the reply left for Twilio
    first_mark_echoed_ns: int = 0  # Twilio echoed the first mark: the caller heard the first sentence

    def known(self) -> dict[str, int]:
        """The stamps that are set, by name."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v}


#: Every stamp name, in record-column order.
STAMP_NAMES: tuple[str, ...] = TurnStamps.__struct_fields__

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


def stage_latencies_ms(stamps: TurnStamps | Mapping[str, int | None]) -> dict[str, float]:
    """Every stage of `STAGES` whose two stamps are known and ordered, in ms (0.1 ms resolution)."""
    if isinstance(stamps, TurnStamps):
        stamps = stamps.known()
    out = {}
    for name, a, b in STAGES:
        ta, tb = stamps.get(a), stamps.get(b)
        if ta and tb and tb >= ta:
            out[name] = round((tb - ta) / 1e6, 1)
    return out


def turn_segments(stamps: TurnStamps | Mapping[str, int | None]) -> list[dict]:
    """The waterfall of one agent turn: known segments in pipeline order, ms from speech end."""
    if isinstance(stamps, TurnStamps):
        stamps = stamps.known()
    base = stamps.get("speech_end_ns") or None
    out = []
    for label, a, b, kind in SEGMENTS:
        ta, tb = stamps.get(a), stamps.get(b)
        if not ta or not tb or tb < ta:
            continue
        base = base or ta
        out.append({"stage": label, "kind": kind, "start_ms": (ta - base) / 1e6, "ms": (tb - ta) / 1e6})
    return out


assert {n for _, a, b in STAGES for n in (a, b)} <= set(STAMP_NAMES), "a stage names an unknown stamp"
assert {n for _, a, b, _ in SEGMENTS for n in (a, b)} <= set(STAMP_NAMES), "a segment names an unknown stamp"

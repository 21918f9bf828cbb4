"""The conversation latency benchmark behind `tools/simcall.py --questions N`.

Each simulated call asks N questions (Piper speech, like a phone line), waiting for each answer
to finish like a person would; every `--barge-in-every`-th question interrupts the answer instead.
Reported from the caller's side (voice-to-voice, heard, barge-in stop) and cross-checked with the
server's own per-stage stamps in its call records.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from tools.simcall import percentiles as pct
from voicecall.latency import STAGES, stage_latencies_ms
from voicecall.sim.client import CallReport, CallScript, Utterance

QUESTIONS = (
    "What time do you open on Saturday?",
    "Where are you located?",
    "Do you have parking?",
    "How much does a checkup cost?",
    "Can I book an appointment for next week?",
    "Are you taking new patients?",
    "I need to reschedule my appointment.",
    "Can I talk to a real person?",
    "Do you take walk-ins?",
    "I need a refill of my prescription.",
    "What are your opening hours?",
    "Is there a bus that stops near you?",
)
BARGE_IN = "Sorry, actually, where is the clinic?"


def build_question_script(n: int, barge_in_every: int, seed: int) -> CallScript:
    from voicecall.sim.speech import utterance  # Piper speech: the test fixtures' synthesizer

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(QUESTIONS))
    utterances = []
    for i in range(n):
        text = QUESTIONS[order[i % len(QUESTIONS)]]
        if barge_in_every and i and i % barge_in_every == 0:
            utterances.append(Utterance(mulaw=utterance(BARGE_IN).mulaw, barge_in_after_ms=1500))
        else:
            utterances.append(Utterance(mulaw=utterance(text).mulaw, pause_before_ms=int(rng.integers(300, 900)),
                                        after_reply=True))
    utterances[0].pause_before_ms = 0
    return CallScript(utterances=utterances, tail_ms=8000, max_s=40.0 * n + 60)


def server_stages(db: str | Path, call_sids: list[str]) -> dict[str, list[float]]:
    """Per-stage latencies (ms) of the agent turns of these calls, from the server's records."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    out: dict[str, list[float]] = {name: [] for name, _a, _b in STAGES}
    marks = ",".join("?" * len(call_sids))
    rows = conn.execute(
        f"SELECT t.* FROM turns t JOIN calls c ON t.call_id = c.id WHERE c.call_sid IN ({marks}) AND t.role = 'agent'",
        call_sids,
    ).fetchall()
    for row in rows:
        for name, ms in stage_latencies_ms(dict(row)).items():
            out[name].append(ms)
    conn.close()
    return out


def report(reports: list[CallReport], db: str | None, rss: dict[str, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "calls": len(reports),
        "protocol_errors": [e for r in reports for e in r.protocol_errors][:20],
        "caller_side": {
            "voice_to_voice_ms": pct([v for r in reports for v in r.response_ms]),
            "heard_ms": pct([v for r in reports for v in r.answer_heard_ms]),
            "barge_in_stop_ms": pct([v for r in reports for v in r.barge_in_stop_ms]),
        },
    }
    if db:
        stages = server_stages(db, [r.call_sid for r in reports if r.call_sid])
        out["server_side"] = {name: pct(values) for name, values in stages.items()}
    if rss:
        out["memory"] = rss
    return out


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"voicecall latency, {result['calls']} concurrent call(s)", title_justify="left")
    for col in ("side", "measure", "n", "p50 ms", "p95 ms", "max ms"):
        t.add_column(col, justify="left" if col in ("side", "measure") else "right")
    for side in ("caller_side", "server_side"):
        for name, v in (result.get(side) or {}).items():
            if v:
                t.add_row(side.replace("_", " "), name, str(v["n"]), f"{v['p50']:.0f}", f"{v['p95']:.0f}", f"{v['max']:.0f}")
    Console().print(t)
    if result.get("memory"):
        Console().print(f"memory: {result['memory']}")

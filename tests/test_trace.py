"""`voicecall trace` on a recorded call: valid PNGs of sane size, stages in pipeline order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from voicecall.records import CallRecords

ROOT = Path(__file__).resolve().parents[1]


def _record_call(db: Path, n_turns: int = 2) -> None:
    rec = CallRecords(db)
    ids: list[int] = []
    rec.call_started(ids.append, call_sid="CAtrace", stream_sid="MZtrace")
    row = lambda: ids[0] if ids else None  # noqa: E731
    for turn in range(1, n_turns + 1):
        t0 = turn * 10_000_000_000
        ms = 1_000_000
        stamps = {
            "speech_start_ns": t0 - 1500 * ms, "speech_end_ns": t0, "turn_end_ns": t0 + 320 * ms,
            "stt_final_ns": t0 + 480 * ms, "stt_final_recv_ns": t0 + 481 * ms, "llm_first_token_ns": t0 + 500 * ms,
            "llm_first_token_recv_ns": t0 + 501 * ms, "first_clause_ns": t0 + 530 * ms, "tts_first_audio_ns": t0 + 600 * ms,
            "tts_first_audio_recv_ns": t0 + 601 * ms, "first_media_sent_ns": t0 + 602 * ms, "first_mark_echoed_ns": t0 + 1900 * ms,
        }
        rec.turn(row, turn, "caller", "What are your hours?", stamps=stamps)
        rec.turn(row, turn, "agent", "We open at eight.", heard_text="We open at eight.", stamps=stamps)
    rec.call_ended(row, "caller hung up")
    rec.flush()
    rec.close()


def _run(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "voicecall.cli", "trace", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_waterfall_png_and_stage_order(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    _record_call(db)
    out = tmp_path / "w.png"
    r = _run("--db", str(db), "--out", str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 2_000_000
    r = _run("CAtrace", "--db", str(db), "--json")
    turns = json.loads(r.stdout)["turns"]
    stages = [s["stage"] for s in turns[0]["segments"]]
    assert stages[0] == "caller speech" and stages[-1] == "first mark echoed"
    assert stages.index("STT final") < stages.index("LLM first token") < stages.index("TTS first audio")
    assert "ipc llm->telephony" in stages
    starts = [s["start_ms"] for s in turns[0]["segments"]]
    assert starts == sorted(starts)


def test_all_calls_distribution_png(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    _record_call(db, n_turns=3)
    out = tmp_path / "all.png"
    r = _run("--all", "--db", str(db), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000

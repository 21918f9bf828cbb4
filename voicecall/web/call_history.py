"""Ended calls for the /calls page: transcripts and per-turn latency waterfalls from the records DB.

Blocking reads (SQLite or PostgreSQL); the views call `ended_calls` through `asyncio.to_thread`
so the event loop (and every live call on it) never waits on the database. Each read opens its
own read-only connection: the records writer owns the only writing one. With a shared
PostgreSQL the page shows the calls of every box (each names its instance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicecall.config import RecordsConfig
from voicecall.latency import stage_latencies_ms, turn_segments
from voicecall.records import call_tool_calls, call_turns, recent_calls
from voicecall.storage.engine import RecordsUnavailable, connect


def _operator_fields(call: dict[str, Any]) -> dict[str, Any]:
    """Agent, AMD verdict and the recording's URL (served by `add_views`) when the call has them."""
    return {"agent": call.get("agent") or "", "answered_by": call.get("answered_by") or "",
            "recording": f"/calls/{call['id']}/recording.wav" if call.get("recording_path") else ""}


def recording_path(records: RecordsConfig, call_id: int) -> Path | None:
    """The WAV of call `call_id`, if it was recorded and the file is still there."""
    try:
        db = connect(records.resolved_url(), password_env=records.password_env, readonly=True,
                     connect_timeout_s=records.connect_timeout_s)
    except RecordsUnavailable:
        return None
    try:
        row = db.one("SELECT * FROM calls WHERE id = ?", (call_id,))
    finally:
        db.close()
    path = row.get("recording_path") if row is not None else None
    return Path(path) if path and Path(path).is_file() else None


def ended_calls(records: RecordsConfig, limit: int) -> dict[str, Any]:
    """The `limit` most recent ended calls, newest first; `error` says why there are none."""
    try:
        db = connect(records.resolved_url(), password_env=records.password_env, readonly=True,
                     connect_timeout_s=records.connect_timeout_s)
    except RecordsUnavailable as exc:
        return {"calls": [], "error": f"no call records: {exc}"}
    try:
        out = []
        for call in recent_calls(db, limit * 2):
            if call["ended_at"] is None:  # live: the page shows those from the registry
                continue
            tools = call_tool_calls(db, call["id"])
            turns = [
                {
                    "turn": t["turn_id"], "role": t["role"], "text": t["text"], "heard": t["heard_text"],
                    "interrupted": bool(t["interrupted"]), "fallback": bool(t["fallback"]),
                    "latency_ms": stage_latencies_ms(t), "segments": turn_segments(t) if t["role"] == "agent" else [],
                    "tools": tools.get(t["turn_id"], []) if t["role"] == "agent" else [],
                }
                for t in call_turns(db, call["id"])
            ]
            out.append({
                "id": call["id"], "call_sid": call["call_sid"] or "", "from": call["from_number"] or "",
                "instance": call.get("instance") or "",
                "started_at": call["started_at"], "ended_at": call["ended_at"],
                "duration_s": round(call["ended_at"] - call["started_at"], 1), "end_reason": call["end_reason"] or "",
                "barge_ins": call["barge_ins"] or 0, "fallbacks": call["fallbacks"] or 0, "turns": turns,
                **_operator_fields(dict(call)),
            })
            if len(out) >= limit:
                break
        return {"calls": out, "error": ""}
    except Exception as exc:  # noqa: BLE001 - sqlite3.Error or psycopg.Error: the page shows why
        return {"calls": [], "error": f"reading call records {db.where} failed: {type(exc).__name__}: {exc}"}
    finally:
        db.close()

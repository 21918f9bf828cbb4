"""Ended calls for the /calls page: transcripts and per-turn latency waterfalls from the records DB.

Blocking SQLite reads; the views call `ended_calls` through `asyncio.to_thread` so the event loop
(and every live call on it) never waits on the disk. Each read opens its own read-only
connection: the records writer owns the only writing one.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from voicecall.latency import stage_latencies_ms, turn_segments
from voicecall.records import call_turns, connect, recent_calls


def ended_calls(db_path: str | Path, limit: int) -> dict[str, Any]:
    """The `limit` most recent ended calls, newest first; `error` says why there are none."""
    path = Path(db_path)
    if not path.exists():
        return {"calls": [], "error": f"no call records yet ({path} does not exist)"}
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        return {"calls": [], "error": f"cannot open call records {path}: {exc}"}
    try:
        out = []
        for call in recent_calls(conn, limit * 2):
            if call["ended_at"] is None:  # live: the page shows those from the registry
                continue
            turns = [
                {
                    "turn": t["turn_id"], "role": t["role"], "text": t["text"], "heard": t["heard_text"],
                    "interrupted": bool(t["interrupted"]), "fallback": bool(t["fallback"]),
                    "latency_ms": stage_latencies_ms(dict(t)), "segments": turn_segments(dict(t)) if t["role"] == "agent" else [],
                }
                for t in call_turns(conn, call["id"])
            ]
            out.append({
                "id": call["id"], "call_sid": call["call_sid"] or "", "from": call["from_number"] or "",
                "started_at": call["started_at"], "ended_at": call["ended_at"],
                "duration_s": round(call["ended_at"] - call["started_at"], 1), "end_reason": call["end_reason"] or "",
                "barge_ins": call["barge_ins"] or 0, "fallbacks": call["fallbacks"] or 0, "turns": turns,
            })
            if len(out) >= limit:
                break
        return {"calls": out, "error": ""}
    except sqlite3.Error as exc:
        return {"calls": [], "error": f"reading call records {path} failed: {exc}"}
    finally:
        conn.close()

"""List recorded calls, or print one as a transcript with per-turn latencies.

    voicecall calls                     # the 20 most recent calls
    voicecall calls show [SID|ID]       # one call (default: the latest) as a transcript
    voicecall calls show --json         # the same as JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys
from pathlib import Path

from voicecall.latency import stage_latencies_ms
from voicecall.records import call_turns, connect, find_call, recent_calls


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def call_as_dict(conn: sqlite3.Connection, call: sqlite3.Row) -> dict:
    turns = []
    for t in call_turns(conn, call["id"]):
        turns.append({
            "turn": t["turn_id"], "role": t["role"], "text": t["text"], "heard": t["heard_text"],
            "interrupted": bool(t["interrupted"]), "fallback": bool(t["fallback"]), "latency_ms": stage_latencies_ms(dict(t)),
        })
    return {**{k: call[k] for k in call.keys()}, "turns": turns}


def print_call(data: dict) -> None:
    dur = f"{data['ended_at'] - data['started_at']:.1f} s" if data.get("ended_at") else "live"
    print(f"call {data['id']}  {data['call_sid'] or '-'}  from {data['from_number'] or '-'}  "
          f"{_when(data['started_at'])}  ({dur}, {data['end_reason'] or 'in progress'})")
    for t in data["turns"]:
        who = "caller" if t["role"] == "caller" else "agent "
        flag = f"  [interrupted; heard: {t['heard']!r}]" if t["interrupted"] else ""
        flag += "  [fallback]" if t["fallback"] else ""
        print(f"  {t['turn']:>3} {who}: {t['text']}{flag}")
        lat = t["latency_ms"]
        if t["role"] == "agent" and lat:
            keys = ("voice_to_voice", "turn_end_to_first_media", "stt_final", "llm_first_token", "tts_first_audio", "heard_latency")
            print("        " + "  ".join(f"{k}={lat[k]:.0f}ms" for k in keys if k in lat))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="data/calls.db", help="SQLite call records (default: %(default)s)")
    sub = p.add_subparsers(dest="cmd")
    show = sub.add_parser("show", help="print one call as a transcript")
    show.add_argument("sid", nargs="?", help="call SID, stream SID or record id (default: latest)")
    show.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    args = p.parse_args(argv)
    if not Path(args.db).exists():
        print(f"no call records at {args.db} (place a call first, or pass --db)", file=sys.stderr)
        return 1
    conn = connect(args.db, readonly=True)
    if args.cmd == "show":
        call = find_call(conn, args.sid)
        if call is None:
            print(f"no call {args.sid!r} in {args.db}", file=sys.stderr)
            return 1
        data = call_as_dict(conn, call)
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            print_call(data)
        return 0
    print(f"{'id':>4}  {'started':<19}  {'call sid':<36}  {'from':<14}  {'turns':>5}  ended")
    for c in recent_calls(conn, args.limit):
        n = conn.execute("SELECT COUNT(*) FROM turns WHERE call_id = ? AND role = 'agent'", (c["id"],)).fetchone()[0]
        print(f"{c['id']:>4}  {_when(c['started_at']):<19}  {c['call_sid'] or '-':<36}  {c['from_number'] or '-':<14}  {n:>5}  {c['end_reason'] or 'live'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

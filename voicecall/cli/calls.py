"""List recorded calls, or print one as a transcript with per-turn latencies.

    voicecall calls                     # the 20 most recent calls
    voicecall calls show [SID|ID]       # one call (default: the latest) as a transcript
    voicecall calls show --json         # the same as JSON
    voicecall calls --db postgresql://voicecall@db:5432/calls   # any records.url (password: --password-env)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from voicecall.records import agent_turn_counts, call_as_dict, find_call, recent_calls
from voicecall.storage.engine import RecordsUnavailable, RecordsUrlError, connect


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def print_call(data: dict) -> None:
    dur = f"{data['ended_at'] - data['started_at']:.1f} s" if data.get("ended_at") else "live"
    print(f"call {data['id']}  {data['call_sid'] or '-'}  from {data['from_number'] or '-'}  "
          f"{_when(data['started_at'])}  ({dur}, {data['end_reason'] or 'in progress'})  on {data.get('instance') or '-'}")
    extra = [f"{k}: {data[k]}" for k in ("direction", "agent", "answered_by") if data.get(k)]
    if extra:
        print("  " + "  ".join(extra))
    if data.get("recording_path"):
        print(f"  recording: {data['recording_path']}")
    for t in data["turns"]:
        who = "caller" if t["role"] == "caller" else "agent "
        flag = f"  [interrupted; heard: {t['heard']!r}]" if t["interrupted"] else ""
        flag += "  [fallback]" if t["fallback"] else ""
        for tool in t.get("tools", []):
            state = "ok" if tool["ok"] else "failed"
            print(f"        tool {tool['name']}({tool['arguments']}) -> {tool['result']}  [{state}, "
                  f"{tool['duration_ms'] or 0:.0f} ms]")
        print(f"  {t['turn']:>3} {who}: {t['text']}{flag}")
        lat = t["latency_ms"]
        if t["role"] == "agent" and lat:
            keys = ("voice_to_voice", "turn_end_to_first_media", "stt_final", "llm_first_token", "tts_first_audio", "heard_latency")
            print("        " + "  ".join(f"{k}={lat[k]:.0f}ms" for k in keys if k in lat))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default="data/calls.db",
                   help="records.url (sqlite:///..., postgresql://...) or a SQLite file (default: %(default)s)")
    p.add_argument("--password-env", default="VOICECALL_DB_PASSWORD",
                   help="environment variable holding the PostgreSQL password (default: %(default)s)")
    sub = p.add_subparsers(dest="cmd")
    show = sub.add_parser("show", help="print one call as a transcript")
    show.add_argument("sid", nargs="?", help="call SID, stream SID or record id (default: latest)")
    show.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=20)
    args = p.parse_args(argv)
    try:
        conn = connect(args.db, password_env=args.password_env, readonly=True)
    except (RecordsUnavailable, RecordsUrlError) as exc:
        print(f"no call records: {exc} (place a call first, or pass --db)", file=sys.stderr)
        return 1
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
    print(f"{'id':>4}  {'started':<19}  {'call sid':<36}  {'from':<14}  {'instance':<12}  {'turns':>5}  ended")
    calls = recent_calls(conn, args.limit)
    counts = agent_turn_counts(conn, [c["id"] for c in calls])
    for c in calls:
        print(f"{c['id']:>4}  {_when(c['started_at']):<19}  {c['call_sid'] or '-':<36}  {c['from_number'] or '-':<14}  "
              f"{c.get('instance') or '-':<12}  {counts.get(c['id'], 0):>5}  {c['end_reason'] or 'live'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

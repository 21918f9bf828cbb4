"""The conversation latency report: `voicecall sim --questions N` and `voicecall latency-report`.

`voicecall sim --questions N` (voicecall/sim/questions.py) reports from the caller's side
(voice-to-voice, heard, barge-in stop), cross-checked with the server's own per-stage stamps in
its call records; `voicecall latency-report` prints the server side alone for recorded calls.

    voicecall latency-report --db data/calls.db            # the 20 most recent calls
    voicecall latency-report --db data/calls.db CA01... CA02...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from voicecall.latency import STAGES, stage_latencies_ms
from voicecall.percentiles import summary
from voicecall.records import connect, recent_calls
from voicecall.sim.script import CallReport
from voicecall.storage.engine import RecordsUnavailable, RecordsUrlError


def server_stages(db: str | Path, call_sids: list[str]) -> dict[str, list[float]]:
    """Per-stage latencies (ms) of the agent turns of these calls, from the server's records."""
    conn = connect(db, password_env="VOICECALL_DB_PASSWORD", readonly=True)  # a SQLite path or any records.url
    out: dict[str, list[float]] = {name: [] for name, _a, _b in STAGES}
    marks = ",".join("?" * len(call_sids))
    rows = conn.query(
        f"SELECT t.* FROM turns t JOIN calls c ON t.call_id = c.id WHERE c.call_sid IN ({marks}) AND t.role = 'agent'",
        call_sids,
    )
    for row in rows:
        for name, ms in stage_latencies_ms(row).items():
            out[name].append(ms)
    conn.close()
    return out


def report(reports: list[CallReport], db: str | None, rss: dict[str, float] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "calls": len(reports),
        "protocol_errors": [e for r in reports for e in r.protocol_errors][:20],
        "caller_side": {
            "voice_to_voice_ms": summary([v for r in reports for v in r.response_ms]),
            "heard_ms": summary([v for r in reports for v in r.answer_heard_ms]),
            "barge_in_stop_ms": summary([v for r in reports for v in r.barge_in_stop_ms]),
        },
    }
    if db:
        stages = server_stages(db, [r.call_sid for r in reports if r.call_sid])
        out["server_side"] = {name: summary(values) for name, values in stages.items()}
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="voicecall latency-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("call_sids", nargs="*", help="Twilio call SIDs (default: the --last most recent calls)")
    p.add_argument("--db", default="data/calls.db", help="the server's call records (default: %(default)s)")
    p.add_argument("--last", type=int, default=20, help="without call SIDs: this many recent calls")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    try:
        conn = connect(args.db, password_env="VOICECALL_DB_PASSWORD", readonly=True)  # a SQLite path or any records.url
    except (RecordsUnavailable, RecordsUrlError) as exc:
        print(f"no call records: {exc}", file=sys.stderr)
        return 1
    sids = args.call_sids
    if not sids:
        sids = [row["call_sid"] for row in recent_calls(conn, args.last) if row["call_sid"]]
    conn.close()
    stages = server_stages(args.db, sids)
    result = {"calls": len(sids), "server_side": {name: summary(values) for name, values in stages.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0

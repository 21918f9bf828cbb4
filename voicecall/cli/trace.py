"""Draw where each turn's milliseconds went, from the call records.

    voicecall trace                      # latest call: one waterfall PNG of all its turns
    voicecall trace CA0123... --out t.png
    voicecall trace --all --out all.png  # every stage's latency distribution over many calls
    voicecall trace --json               # the segments as JSON (no PNG)

A waterfall row is one stage of a turn (caller speech, endpoint wait, STT, ...), drawn from the
stamps `voicecall/latency.py` names; the thin dark bars are IPC hops (a worker's stamp -> the telephony
process receiving it), so the cost of crossing processes is visible next to the model time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from voicecall.latency import SEGMENTS, turn_segments
from voicecall.records import call_turns, find_call
from voicecall.storage.engine import Db, RecordsUnavailable, RecordsUrlError, connect

COLORS = {"caller": "#8fbf7f", "stt": "#5b8bd9", "llm": "#d9825b", "tts": "#b45bd9", "telephony": "#9a9a9a", "ipc": "#202020"}


def call_waterfalls(conn: Db, call: dict) -> list[dict]:
    return [
        {"turn": t["turn_id"], "text": t["text"], "interrupted": bool(t["interrupted"]), "segments": turn_segments(dict(t))}
        for t in call_turns(conn, call["id"])
        if t["role"] == "agent"
    ]


def draw_waterfall(call: dict, turns: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = [t for t in turns if t["segments"]]
    if not turns:
        raise SystemExit("no agent turn of this call has timing stamps")
    fig, axes = plt.subplots(len(turns), 1, figsize=(11, 1.0 + 2.3 * len(turns)), squeeze=False)
    for ax, turn in zip(axes[:, 0], turns, strict=True):
        segs = turn["segments"]
        for row, seg in enumerate(segs):
            height = 0.35 if seg["kind"] == "ipc" else 0.8
            ax.barh(row, max(seg["ms"], 0.3), left=seg["start_ms"], height=height, color=COLORS[seg["kind"]])
            ax.text(seg["start_ms"] + max(seg["ms"], 0.3) + 3, row, f"{seg['ms']:.1f} ms", va="center", fontsize=7)
        ax.set_yticks(range(len(segs)), [s["stage"] for s in segs], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="#444", lw=0.6, ls="--")
        flag = " (interrupted)" if turn["interrupted"] else ""
        ax.set_title(f"turn {turn['turn']}{flag}: {turn['text'][:90]}", fontsize=8, loc="left")
        ax.set_xlabel("ms from end of caller speech", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"voicecall call {call['id']} {call['call_sid'] or ''}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def stage_distributions(conn: Db, limit_calls: int) -> dict[str, list[float]]:
    rows = conn.query(
        "SELECT t.* FROM turns t JOIN (SELECT id FROM calls ORDER BY started_at DESC, id DESC LIMIT ?) c "
        "ON t.call_id = c.id WHERE t.role = 'agent'",
        (limit_calls,),
    )
    dist: dict[str, list[float]] = {label: [] for label, *_ in SEGMENTS}
    for row in rows:
        for seg in turn_segments(row):
            dist[seg["stage"]].append(seg["ms"])
    return {k: v for k, v in dist.items() if v}


def draw_distributions(dist: dict[str, list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not dist:
        raise SystemExit("no recorded turns with timing stamps")
    labels = list(dist)
    fig, ax = plt.subplots(figsize=(11, 0.5 + 0.45 * len(labels)))
    ax.boxplot([dist[k] for k in labels], orientation="horizontal", showfliers=True, widths=0.6)
    ax.set_yticks(range(1, len(labels) + 1), [f"{k} (n={len(dist[k])})" for k in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("ms (symlog)", fontsize=8)
    ax.set_title("voicecall: latency of every stage over recorded turns", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sid", nargs="?", help="call SID, stream SID or record id (default: the latest call)")
    p.add_argument("--db", default="data/calls.db", help="records.url or a SQLite file (default: %(default)s)")
    p.add_argument("--password-env", default="VOICECALL_DB_PASSWORD", help="PostgreSQL password variable")
    p.add_argument("--all", action="store_true", help="distribution of every stage over many calls")
    p.add_argument("--calls", type=int, default=500, help="with --all: how many recent calls")
    p.add_argument("--out", type=Path, help="PNG path (default: trace-<call>.png or trace-all.png)")
    p.add_argument("--json", action="store_true", help="print the data as JSON instead of drawing")
    p.add_argument("--turns", type=int, default=6, help="waterfalls of at most this many turns (from the first)")
    args = p.parse_args(argv)
    try:
        conn = connect(args.db, password_env=args.password_env, readonly=True)
    except (RecordsUnavailable, RecordsUrlError) as exc:
        print(f"no call records: {exc}", file=sys.stderr)
        return 1
    if args.all:
        dist = stage_distributions(conn, args.calls)
        if args.json:
            print(json.dumps(dist))
            return 0
        out = args.out or Path("trace-all.png")
        draw_distributions(dist, out)
        print(f"wrote {out} ({sum(map(len, dist.values()))} samples, {len(dist)} stages)")
        return 0
    call = find_call(conn, args.sid)
    if call is None:
        print(f"no call {args.sid or '(any)'} in {args.db}", file=sys.stderr)
        return 1
    turns = call_waterfalls(conn, call)
    if args.json:
        print(json.dumps({"call": call["id"], "call_sid": call["call_sid"], "turns": turns}))
        return 0
    out = args.out or Path(f"trace-{call['call_sid'] or call['id']}.png")
    turns = [t for t in turns if t["segments"]][: args.turns]
    draw_waterfall(call, turns, out)
    print(f"wrote {out} ({len(turns)} turns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

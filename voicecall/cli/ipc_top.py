"""Live view of every IPC channel of a running voicecall (like `top`, for rings).

    voicecall ipc-top                          # attach to http://127.0.0.1:8080, refresh every second
    voicecall ipc-top --url http://host:8080 --interval 2
    voicecall ipc-top --once --json            # one interval, as JSON, for scripts

One row per channel (producer -> consumer, kind): records/s, bytes/s, one-way latency p50/p99
over the last interval (from each ring's shared histogram), occupancy, drops, wake-ups/s.
Reads `/debug/ipc` (served to loopback clients only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from ipc.stats import interval


def fetch(url: str, timeout: float = 3.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/debug/ipc", timeout=timeout) as resp:  # noqa: S310 - operator-given URL
        return json.loads(resp.read())


def rows(prev: dict[str, Any] | None, cur: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-channel interval stats between two `/debug/ipc` snapshots."""
    seconds = (cur["ts_ns"] - prev["ts_ns"]) / 1e9 if prev else max(cur.get("uptime_s", 1.0), 1e-3)
    before = {c["channel"]: c for c in prev["channels"]} if prev else {}
    return [interval(before.get(c["channel"]), c, seconds) for c in cur["channels"]]


def _fmt_rate(v: float) -> str:
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _fmt_us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1e3:.2f} ms" if v >= 1000 else f"{v:.1f} us"


def table(data: list[dict[str, Any]], title: str):  # noqa: ANN201 - rich.table.Table
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col, just in (("channel", "left"), ("producer -> consumer", "left"), ("kind", "left"), ("rec/s", "right"),
                      ("bytes/s", "right"), ("p50", "right"), ("p99", "right"), ("occupancy", "right"),
                      ("drops", "right"), ("wakes/s", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in data:
        t.add_row(
            r["channel"], f"{r['producer']} -> {r['consumer']}", r["kind"], _fmt_rate(r["records_per_s"]),
            _fmt_rate(r["bytes_per_s"]) + "B", _fmt_us(r["p50_us"]), _fmt_us(r["p99_us"]),
            f"{r['occupancy']:.2%}", str(r["dropped"]), f"{r['wakes_per_s']:.0f}",
        )
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots")
    p.add_argument("--once", action="store_true", help="print one interval and exit")
    p.add_argument("--json", action="store_true", help="with --once: JSON instead of a table")
    args = p.parse_args(argv)
    try:
        prev = fetch(args.url)
    except (urllib.error.URLError, OSError) as exc:
        print(f"cannot read {args.url}/debug/ipc: {exc} (is voicecall running? /debug/ipc answers loopback only)", file=sys.stderr)
        return 1
    if args.once:
        time.sleep(args.interval)
        cur = fetch(args.url)
        data = rows(prev, cur)
        if args.json:
            print(json.dumps({"interval_s": (cur["ts_ns"] - prev["ts_ns"]) / 1e9, "channels": data}, indent=2))
        else:
            from rich.console import Console

            Console().print(table(data, f"voicecall IPC — {args.url}"))
        return 0
    from rich.live import Live

    with Live(table(rows(None, prev), "voicecall IPC (since start)"), refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(args.interval)
                cur = fetch(args.url)
                live.update(table(rows(prev, cur), f"voicecall IPC — {args.url} — last {args.interval:g} s"))
                prev = cur
        except KeyboardInterrupt:
            return 0
        except (urllib.error.URLError, OSError) as exc:
            print(f"lost {args.url}: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())

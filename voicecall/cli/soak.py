"""A chaos soak: N simulated callers for M minutes against a voicecall this command starts, with faults.

    voicecall soak --calls 8 --minutes 10 --fault-every-s 60 --json data/soak.json
    voicecall soak --calls 4 --minutes 2 --fault-every-s 20 --faults kill:stt,stop:tts

Each caller places call after call, each a random mix of questions, barge-ins, backchannels,
DTMF, malformed frames and hang-ups mid-sentence (voicecall/sim/soak.py). Faults come in a
cycle (voicecall/sim/soak_faults.py). Prints a Markdown table; --json writes every figure.
Exit status 1 when something leaked (a process or a segment) or the system did not exit 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from voicecall.sim.soak import SoakSettings, run_soak, table
from voicecall.sim.soak_faults import DEFAULT_CYCLE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=8, help="concurrent callers")
    p.add_argument("--minutes", type=float, default=10.0, help="how long callers keep calling")
    p.add_argument("--fault-every-s", type=float, default=60.0, help="seconds between faults")
    p.add_argument("--faults", default=",".join(DEFAULT_CYCLE),
                   help="the cycle: kill:ROLE, stop:ROLE (3 s), full_ring, slow_llm; empty for none")
    p.add_argument("--config", default="configs/cpu.toml", help="the base config (port and db are replaced)")
    p.add_argument("--workdir", default="data/soak", help="config, log and call db of the soaked system")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warmup-s", type=float, default=30.0, help="RSS growth is counted from here on")
    p.add_argument("--json", default="", help="also write the report to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = SoakSettings(calls=args.calls, minutes=args.minutes, fault_every_s=args.fault_every_s,
                            faults=tuple(f for f in args.faults.split(",") if f), seed=args.seed,
                            base_config=args.config, workdir=Path(args.workdir), warmup_s=args.warmup_s)
    report = run_soak(settings)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    leaked = report.get("leaked_processes") or report.get("leaked_segments")
    return 1 if leaked or report.get("exit_code") != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())

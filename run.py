#!/usr/bin/env python3
"""voicecall entry point: `python run.py --config configs/cpu.toml` (see voicecall/supervisor.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from voicecall.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the voicecall phone agent (supervisor + workers + telephony).")
    parser.add_argument("--config", default="configs/cpu.toml", help="TOML config file (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="validate the config and the presence of every model, then exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.log_level), format="%(asctime)s %(name)-20s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"
    )
    if args.check:
        from voicecall.preflight import check_models

        found, problems = check_models(cfg, args.config)
        for line in found:
            print(f"  ok  {line}")
        for line in problems:
            print(f"  MISSING  {line}", file=sys.stderr)
        print(f"{args.config}: config valid; {len(found)} present, {len(problems)} missing")
        return 1 if problems else 0
    from voicecall.supervisor import Supervisor

    return Supervisor(cfg).run()


if __name__ == "__main__":  # required: every child process is started with `spawn`
    sys.exit(main())

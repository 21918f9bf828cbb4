"""`voicecall run` (= `python run.py`) and `voicecall check` (= `python run.py --check`)."""

from __future__ import annotations

import argparse
import logging
import sys

from voicecall.config import Config, ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicecall run",
                                     description="Run the voicecall phone agent (supervisor + workers + telephony).")
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
        return check_models_of(cfg, args.config)
    from ipc.child import set_process_title
    from voicecall.supervisor import Supervisor

    set_process_title("supervisor")  # `voicecall: supervisor` in ps/top, beside its children's titles
    return Supervisor(cfg).run()


def check(argv: list[str] | None = None) -> int:
    """`voicecall check [--config X]`: the same as `voicecall run --config X --check`."""
    return main([*(argv or []), "--check"])


def check_models_of(cfg: Config, path: str) -> int:
    from voicecall.preflight import check_models, check_records

    found, problems = check_models(cfg, path)
    records_found, records_problems = check_records(cfg, path)
    found, problems = found + records_found, problems + records_problems
    for line in found:
        print(f"  ok  {line}")
    for line in problems:
        print(f"  MISSING  {line}", file=sys.stderr)
    print(f"{path}: config valid; {len(found)} present, {len(problems)} missing")
    return 1 if problems else 0

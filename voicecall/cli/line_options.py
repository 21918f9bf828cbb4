"""The simulated phone line's command-line options, shared by `voicecall sim` and `voicecall turn-bench`.

    --noise-dbfs -45 --level-db -15 --echo-db -30 --echo-delay-ms 40 --band
"""

from __future__ import annotations

import argparse

from voicecall.sim.phone_line import (
    BAND_HZ,
    MAX_DBFS,
    MAX_ECHO_DB,
    MAX_ECHO_DELAY_MS,
    MAX_LEVEL_DB,
    MIN_DBFS,
    MIN_ECHO_DB,
    MIN_LEVEL_DB,
    PhoneLine,
    check,
    phone_line,
)


def add_line_arguments(p: argparse.ArgumentParser) -> None:
    """--noise-dbfs, --level-db, --echo-db, --echo-delay-ms and --band."""
    p.add_argument("--noise-dbfs", type=float, default=None,
                   help=f"a noisy line: background noise at this level (dBFS RMS, {MIN_DBFS:g}..{MAX_DBFS:g}, "
                        "e.g. -45) under everything each caller sends, pauses included")
    p.add_argument("--level-db", type=float, default=0.0,
                   help=f"quiet (or loud) callers: their speech scaled by this many dB ({MIN_LEVEL_DB:g}..{MAX_LEVEL_DB:g})")
    p.add_argument("--echo-db", type=float, default=None,
                   help=f"an echoing line: the agent's audio comes back this many dB down ({MIN_ECHO_DB:g}..{MAX_ECHO_DB:g}, "
                        "e.g. -30: a speakerphone or a handset without an echo canceller)")
    p.add_argument("--echo-delay-ms", type=int, default=40,
                   help=f"with --echo-db: how long after it played the echo comes back (0..{MAX_ECHO_DELAY_MS} ms)")
    p.add_argument("--band", action="store_true",
                   help=f"the caller's speech through the telephone band ({BAND_HZ[0]:g}-{BAND_HZ[1]:g} Hz, ITU-T G.712), "
                        "as an analogue handset or a landline passes it: the voice's fundamental is gone")


def check_line_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error naming the option when a line setting is out of range."""
    try:
        check(args.noise_dbfs, args.level_db, args.echo_db, args.echo_delay_ms)
    except ValueError as e:
        p.error(f"--noise-dbfs / --level-db / --echo-db / --echo-delay-ms: {e}")


def line_for(args: argparse.Namespace, seed: int) -> PhoneLine | None:
    """The line the options describe for the caller numbered `seed` (None: clean)."""
    return phone_line(args.noise_dbfs, args.level_db, seed, args.echo_db, args.echo_delay_ms, args.band)

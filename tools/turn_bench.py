#!/usr/bin/env python3
"""`python tools/turn_bench.py ARGS` = `voicecall turn-bench ARGS` (the code: voicecall/cli/turn_bench.py)."""

import sys

from voicecall.cli.turn_bench import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

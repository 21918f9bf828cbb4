#!/usr/bin/env python3
"""`python tools/stt_bench.py ARGS` = `voicecall stt-bench ARGS` (the code: voicecall/cli/stt_bench.py)."""

import sys

from voicecall.cli.stt_bench import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

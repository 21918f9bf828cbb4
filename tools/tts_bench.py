#!/usr/bin/env python3
"""`python tools/tts_bench.py ARGS` = `voicecall tts-bench ARGS` (the code: voicecall/cli/tts_bench.py)."""

import sys

from voicecall.cli.tts_bench import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

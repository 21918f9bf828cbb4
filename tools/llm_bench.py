#!/usr/bin/env python3
"""`python tools/llm_bench.py ARGS` = `voicecall llm-bench ARGS` (the code: voicecall/cli/llm_bench.py)."""

import sys

from voicecall.cli.llm_bench import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

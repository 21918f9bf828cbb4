#!/usr/bin/env python3
"""`python tools/ipc_bench.py ARGS` = `voicecall ipc-bench ARGS` (the code: voicecall/cli/ipc_bench.py)."""

import sys

from voicecall.cli.ipc_bench import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

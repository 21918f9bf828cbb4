#!/usr/bin/env python3
"""`python tools/trace.py ARGS` = `voicecall trace ARGS` (the code: voicecall/cli/trace.py)."""

import sys

from voicecall.cli.trace import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

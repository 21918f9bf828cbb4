#!/usr/bin/env python3
"""`python tools/simcall.py ARGS` = `voicecall sim ARGS` (the code: voicecall/cli/simcall.py)."""

import sys

from voicecall.cli.simcall import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

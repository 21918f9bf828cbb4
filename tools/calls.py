#!/usr/bin/env python3
"""`python tools/calls.py ARGS` = `voicecall calls ARGS` (the code: voicecall/cli/calls.py)."""

import sys

from voicecall.cli.calls import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

#!/usr/bin/env python3
"""`python tools/soak.py ARGS` = `voicecall soak ARGS` (the code: voicecall/cli/soak.py)."""

import sys

from voicecall.cli.soak import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

#!/usr/bin/env python3
"""`python tools/ipc_top.py ARGS` = `voicecall ipc-top ARGS` (the code: voicecall/cli/ipc_top.py)."""

import sys

from voicecall.cli.ipc_top import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

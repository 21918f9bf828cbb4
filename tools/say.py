#!/usr/bin/env python3
"""`python tools/say.py ARGS` = `voicecall say ARGS` (the code: voicecall/cli/say.py)."""

import sys

from voicecall.cli.say import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

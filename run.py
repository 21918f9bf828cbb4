#!/usr/bin/env python3
"""voicecall entry point: `python run.py --config configs/cpu.toml` (the same as `voicecall run`)."""

import sys

from voicecall.cli.run import main

if __name__ == "__main__":  # required: every child process is started with `spawn`
    sys.exit(main())

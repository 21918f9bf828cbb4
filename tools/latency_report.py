#!/usr/bin/env python3
"""`python tools/latency_report.py ARGS` = `voicecall latency-report ARGS` (the code: voicecall/cli/latency_report.py)."""

import sys

from voicecall.cli.latency_report import main

if __name__ == "__main__":  # required: spawned child processes re-import this module
    sys.exit(main())

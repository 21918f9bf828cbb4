"""`python -m voicecall.cli COMMAND ...`: the same as the installed `voicecall` command."""

import sys

from voicecall.cli import main

if __name__ == "__main__":  # required: subcommands spawn child processes
    sys.exit(main())

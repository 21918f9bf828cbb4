"""The `voicecall` command: one entry point, one subcommand per tool.

    voicecall --help            # every subcommand with its one-line description
    voicecall run --config configs/cpu.toml
    voicecall sim --questions 20

A subcommand is one line in `COMMANDS`: its name, the `module:function` that takes the rest of
the command line (`main(argv) -> exit code`), and what it does. Modules are imported only when
their subcommand runs, so `voicecall --help` stays instant and a bench's heavy imports never
slow another command.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import NamedTuple


class Command(NamedTuple):
    target: str  # "module:function", function(argv: list[str]) -> int
    summary: str


COMMANDS: dict[str, Command] = {
    "run": Command("voicecall.cli.run:main", "run the phone agent: supervisor, telephony, stt, llm and tts processes"),
    "check": Command("voicecall.cli.run:check", "validate a config and the presence of every model it names, then exit"),
    "sim": Command("voicecall.cli.simcall:main", "place simulated Twilio calls (load, barge-in, --questions latency benchmark)"),
    "calls": Command("voicecall.cli.calls:main", "list recorded calls; `show` prints one as a transcript with latencies"),
    "dial": Command("voicecall.cli.dial:main", "place an outbound call through a running server's REST API (/api/calls)"),
    "trace": Command("voicecall.cli.trace:main", "per-turn latency waterfall of a call, or every stage's distribution"),
    "ipc-top": Command("voicecall.cli.ipc_top:main", "live per-channel table of a running system's rings"),
    "ipc-bench": Command("voicecall.cli.ipc_bench:main", "the rings against multiprocessing.Queue, Pipe and raw pipes"),
    "stt-bench": Command("voicecall.cli.stt_bench:main", "the STT worker on its own, in its real process"),
    "llm-bench": Command("voicecall.cli.llm_bench:main", "the LLM worker on its own, in its real process"),
    "tts-bench": Command("voicecall.cli.tts_bench:main", "the TTS worker on its own, in its real process"),
    "turn-bench": Command("voicecall.cli.turn_bench:main", "turn-taking with generated callers: talk-over, "
                          "backchannels, interruptions, voice-to-voice, Smart Turn"),
    "say": Command("voicecall.cli.say:main", "speak a sentence into a WAV with the embedded Piper voice"),
    "soak": Command("voicecall.cli.soak:main", "chaos soak: N simulated callers for M minutes with faults; table + JSON"),
    "latency-report": Command("voicecall.cli.latency_report:main", "per-stage latencies of recorded calls from a calls.db"),
}


def load(name: str) -> Callable[[list[str]], int]:
    """The function behind subcommand `name`."""
    module, _, func = COMMANDS[name].target.partition(":")
    return getattr(importlib.import_module(module), func)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: voicecall COMMAND [ARGS...]   (voicecall COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"voicecall: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if argv is None:  # argparse names the program after argv[0]: `usage: voicecall sim ...`
        sys.argv[0] = f"voicecall {name}"
    return load(name)(rest)

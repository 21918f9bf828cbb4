"""What the operator sees while the system starts: per-worker load progress and a ready table.

On a terminal, one status line is redrawn in place; otherwise (logs, CI) plain log lines,
at most one per worker per stage, so a log file stays readable.
"""

from __future__ import annotations

import logging
import sys
import time

from ipc.messages import LoadProgress

log = logging.getLogger("voicecall.supervisor")


class StartupConsole:
    """Draws load progress of several workers at once."""

    def __init__(self, stream=None) -> None:  # noqa: ANN001 - any text stream
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._state: dict[str, str] = {}
        self._logged: set[tuple[str, str]] = set()
        self._t0 = time.monotonic()

    def progress(self, msg: LoadProgress) -> None:
        bar = ""
        if msg.total > 0:
            frac = min(msg.done / msg.total, 1.0)
            filled = int(frac * 10)
            bar = f" [{'#' * filled}{'.' * (10 - filled)}] {frac:4.0%}"
        self.status(msg.worker, f"{msg.stage}{bar}{' ' + msg.detail if msg.detail else ''}")

    def status(self, worker: str, text: str) -> None:
        self._state[worker] = text
        if self._tty:
            line = " | ".join(f"{w}: {s}" for w, s in sorted(self._state.items()))
            width = 160
            self._stream.write("\r\x1b[2K" + line[:width])
            self._stream.flush()
        elif (worker, text.split(" [")[0]) not in self._logged:
            self._logged.add((worker, text.split(" [")[0]))
            log.info("%s: %s", worker, text)

    def done(self, rows: list[tuple[str, str, float, str]], url: str) -> None:
        """Print the ready table: (worker, state, load seconds, detail)."""
        if self._tty:
            self._stream.write("\r\x1b[2K")
        lines = [f"voicecall ready in {time.monotonic() - self._t0:.1f} s — {url}"]
        lines.append(f"  {'process':<10} {'state':<8} {'load':>7}  detail")
        for name, state, load_s, detail in rows:
            lines.append(f"  {name:<10} {state:<8} {load_s:6.1f}s  {detail}")
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()

"""Keypad digits (Twilio `dtmf` events) collected into one message for the LLM.

    1 .. 2 .. 3 .. (dtmf_inter_digit_s of nothing) -> "1 2 3"
    1 .. 2 .. #                                   -> "1 2"   (`#` ends at once and is not sent)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def keypad_message(digits: str) -> str:
    """What the LLM reads for the digits the caller pressed."""
    return f"(The caller pressed these keys on the phone keypad: {digits})"


class DigitCollector:
    """Buffers digits; `on_digits("1 2 3")` once the caller stops pressing or presses `#`."""

    def __init__(self, inter_digit_s: float, on_digits: Callable[[str], None]) -> None:
        self.inter_digit_s = inter_digit_s
        self._on_digits = on_digits
        self._digits: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def push(self, digit: str) -> None:
        self.cancel()
        if digit == "#":
            self._flush()
            return
        self._digits.append(digit)
        self._timer = asyncio.get_running_loop().call_later(self.inter_digit_s, self._flush)

    def cancel(self) -> None:
        """Stop the timer (the digits so far stay until the next push or flush)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        digits, self._digits = " ".join(self._digits), []
        if digits:
            self._on_digits(digits)

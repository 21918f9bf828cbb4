"""Silence rules: an idle caller is prompted, then let go; no call outlasts `call.max_duration_s`.

    agent finishes a reply ----- idle_prompt_s ------> "Are you still there?"
            (clock starts)  ---------------- idle_hangup_s ----------------> goodbye, hang up
    caller speaks or presses a key: the clock stops; it starts again when the agent next finishes

The idle prompt finishing does not restart the clock (else the hang-up would never come), and
0 turns a rule off. The timers belong to the session: `close()` cancels them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from voicecall.config import CallConfig


class SilenceRules:
    """The idle clock and the call-length timer of one call."""

    def __init__(self, cfg: CallConfig, on_idle_prompt: Callable[[], None], on_idle_hangup: Callable[[], None],
                 on_max_duration: Callable[[], None]) -> None:
        self.cfg = cfg
        self._on_idle_prompt = on_idle_prompt
        self._on_idle_hangup = on_idle_hangup
        self._on_max_duration = on_max_duration
        self._idle: list[asyncio.TimerHandle] = []
        self._max: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """The call began: the call-length timer starts."""
        if self.cfg.max_duration_s > 0:
            self._max = asyncio.get_running_loop().call_later(self.cfg.max_duration_s, self._on_max_duration)

    def listening(self) -> None:
        """The agent finished speaking: the idle clock starts (unless it is already running)."""
        if self._idle:
            return
        loop = asyncio.get_running_loop()
        if self.cfg.idle_prompt_s > 0:
            self._idle.append(loop.call_later(self.cfg.idle_prompt_s, self._on_idle_prompt))
        if self.cfg.idle_hangup_s > 0:
            self._idle.append(loop.call_later(self.cfg.idle_hangup_s, self._on_idle_hangup))

    def caller_active(self) -> None:
        """The caller spoke or pressed a key: the idle clock stops."""
        for timer in self._idle:
            timer.cancel()
        self._idle = []

    def close(self) -> None:
        self.caller_active()
        if self._max is not None:
            self._max.cancel()
            self._max = None

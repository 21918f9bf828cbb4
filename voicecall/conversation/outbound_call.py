"""One outbound call's opening: who answered, and when the agent speaks first.

    stream starts ---------------- the agent waits (an outbound call is not greeted at once)
    callee speaks ("Hello?")  ---> CallSession greets (the session sees the turn end itself)
    call.outbound_greet_after_s -> greet anyway (a callee who waits for us to talk)
    AMD verdict, from /twilio/amd:
        human / unknown      ----> greet if not yet; the conversation goes on
        machine_end_* / fax  ----> after the beep: the agent's voicemail message, then hang up

The verdict comes through `OutboundCalls` (voicecall/outbound.py), which remembers it if it
arrives before the stream starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from voicecall.outbound import OutboundCalls, is_machine

log = logging.getLogger("voicecall.outbound")


class Greets(Protocol):
    greeted: bool

    def greet(self) -> None: ...
    def leave_message(self, text: str) -> None: ...


class OutboundOpening:
    """Owned by the call's handler; `close()` when the stream ends."""

    def __init__(self, session: Greets, outbound: OutboundCalls, call_sid: str, greet_after_s: float,
                 voicemail_message: str) -> None:
        self._session = session
        self._outbound = outbound
        self._call_sid = call_sid
        self._voicemail = voicemail_message
        self.answered_by = ""
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(greet_after_s, self._timeout)
        outbound.subscribe(call_sid, self._on_verdict)

    def _timeout(self) -> None:
        self._timer = None
        if not is_machine(self.answered_by):
            self._session.greet()

    def _on_verdict(self, answered_by: str) -> None:
        self.answered_by = answered_by
        if is_machine(answered_by):
            self._cancel_timer()
            log.info("call %s: %s; leaving the voicemail message", self._call_sid, answered_by)
            self._session.leave_message(self._voicemail)
        elif not self._session.greeted:
            self._cancel_timer()
            self._session.greet()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel_timer()
        call = self._outbound.get(self._call_sid)
        if call is not None:
            call.listener = None

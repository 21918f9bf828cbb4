"""Outbound calls: what we ask Twilio for, and the calls this process placed until they end.

    POST /api/calls -> place_call() -> Twilio `Calls.json`  (To, From, Url, StatusCallback,
                       MachineDetection=DetectMessageEnd, AsyncAmd=true, AsyncAmdStatusCallback)
                    -> OutboundCalls.add(sid, agent, context)
    Twilio -> POST /twilio/voice (Direction=outbound-api) -> the agent chosen at creation
           -> the media stream starts -> the session subscribes to its call's AMD verdict
    Twilio -> POST /twilio/amd (AnsweredBy) -> OutboundCalls.answered(sid, verdict) -> the session:
           human -> the conversation goes on;  machine_end_* -> voicemail message, then hang up

With `DetectMessageEnd` and asynchronous AMD the call is connected at once (the callee is
not kept waiting) and the verdict for a machine comes after its greeting and beep, which is
exactly when a voicemail message should start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voicecall.twilio.rest import CallResource, TwilioRest

log = logging.getLogger("voicecall.outbound")

VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
AMD_PATH = "/twilio/amd"
#: Call progress events Twilio reports to StatusCallback (busy/no-answer/failed arrive as the
#: CallStatus of "completed").
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
#: AnsweredBy values that mean a machine whose greeting has ended (DetectMessageEnd).
MACHINE_END = ("machine_end_beep", "machine_end_silence", "machine_end_other")
#: Outbound calls remembered this long after creation (the stream must start well before).
KEEP_S = 3600.0
MAX_KEPT = 10_000


async def place_call(rest: TwilioRest, public_url: str, to: str) -> CallResource:
    """Create the call through Twilio's REST API (raises TwilioRestError with Twilio's code)."""
    base = public_url.rstrip("/")
    return await rest.create_call(
        to, url=base + VOICE_PATH, status_callback=base + STATUS_PATH, status_callback_events=STATUS_EVENTS,
        machine_detection="DetectMessageEnd", async_amd=True, async_amd_status_callback=base + AMD_PATH,
    )


def is_machine(answered_by: str) -> bool:
    return answered_by in MACHINE_END or answered_by == "fax"


@dataclass
class OutboundCall:
    sid: str
    to: str
    agent: str
    context: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    status: str = "queued"
    answered_by: str = ""
    #: the live session's callback for the AMD verdict (set when its stream starts)
    listener: Callable[[str], None] | None = None


class OutboundCalls:
    """Calls placed by this process, by CallSid (bounded; old entries expire)."""

    def __init__(self) -> None:
        self._calls: dict[str, OutboundCall] = {}

    def add(self, call: OutboundCall) -> None:
        self._expire()
        self._calls[call.sid] = call

    def get(self, sid: str) -> OutboundCall | None:
        return self._calls.get(sid)

    def status(self, sid: str, status: str) -> None:
        call = self._calls.get(sid)
        if call is not None and status:
            call.status = status
            if status in ("completed", "busy", "no-answer", "failed", "canceled"):
                call.listener = None

    def answered(self, sid: str, answered_by: str) -> None:
        """The AMD verdict; handed to the live session if its stream has started."""
        call = self._calls.get(sid)
        if call is None:
            return
        call.answered_by = answered_by
        if call.listener is not None:
            try:
                call.listener(answered_by)
            except Exception:  # a session bug must not turn Twilio's callback into a 500
                log.exception("call %s: AMD listener failed", sid)

    def subscribe(self, sid: str, listener: Callable[[str], None]) -> OutboundCall | None:
        """A session of an outbound call listens for its verdict (told at once if it came first)."""
        call = self._calls.get(sid)
        if call is None:
            return None
        call.listener = listener
        if call.answered_by:
            listener(call.answered_by)
        return call

    def _expire(self) -> None:
        now = time.monotonic()
        if len(self._calls) >= MAX_KEPT or any(now - c.created > KEEP_S for c in self._calls.values()):
            keep = sorted((c for c in self._calls.values() if now - c.created <= KEEP_S), key=lambda c: c.created)
            self._calls = {c.sid: c for c in keep[-(MAX_KEPT - 1):]}

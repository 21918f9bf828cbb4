"""Ending a call from our side: Twilio's REST API when credentials exist, else closing the stream.

Closing the Media Stream WebSocket alone ends only the stream; Twilio then continues with the
TwiML after `<Connect>` (our TwiML has nothing after it, so the call ends too). The REST update
(`Status=completed`, through the one client in `rest.py`) ends the call itself, which is what
an operator with credentials expects.
"""

from __future__ import annotations

import logging

from voicecall.twilio.rest import TwilioRest

log = logging.getLogger("voicecall.telephony")


async def complete_call(rest: TwilioRest, call_sid: str) -> bool:
    """Hang up `call_sid` via REST. True if the call ended (or was already gone); False: close the stream."""
    if not rest.configured or not call_sid:
        return False
    if await rest.hang_up(call_sid):
        return True
    log.warning("REST hang-up of %s failed; closing the stream instead", call_sid)
    return False

"""Ending a call from our side: Twilio's REST API when credentials exist, else closing the stream.

Closing the Media Stream WebSocket alone ends only the stream; Twilio then continues with the
TwiML after `<Connect>` (our TwiML has nothing after it, so the call ends too). The REST call
(`calls(sid).update(status="completed")`) ends the call itself, which is what an operator
with credentials expects.
"""

from __future__ import annotations

import asyncio
import logging
import os

log = logging.getLogger("voicecall.telephony")


def twilio_credentials(account_sid_env: str, auth_token_env: str) -> tuple[str, str] | None:
    sid, token = os.environ.get(account_sid_env, ""), os.environ.get(auth_token_env, "")
    return (sid, token) if sid and token else None


async def complete_call(call_sid: str, credentials: tuple[str, str], timeout_s: float = 5.0) -> bool:
    """Hang up `call_sid` via the REST API (in a thread: the client is blocking). True on success."""

    def work() -> None:
        from twilio.rest import Client

        Client(*credentials).calls(call_sid).update(status="completed")

    try:
        await asyncio.wait_for(asyncio.to_thread(work), timeout_s)
        return True
    except Exception as exc:  # noqa: BLE001 - any failure falls back to closing the stream
        log.warning("REST hang-up of %s failed (%s); closing the stream instead", call_sid, type(exc).__name__)
        return False

"""The one Twilio REST client: hang-up, transfer and outbound calls, async on aiohttp.

Twilio's 2010-04-01 API, spoken directly (the `twilio` package's sync client would block the
event loop, and its async twin is aiohttp underneath anyway)::

    POST {api_base_url}/2010-04-01/Accounts/{AccountSid}/Calls.json         create a call
    POST {api_base_url}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json
         Status=completed                                                   hang up
         Twiml=<Response><Dial>+1555...</Dial></Response>                   transfer (cold)

Requests are form-encoded with HTTP Basic auth (AccountSid:AuthToken); answers are JSON, errors
``{"code": 20404, "message": "...", "more_info": "...", "status": 404}``.

Rules: a POST is never retried (a timed-out POST may still have happened), and an action on a
call is posted at most once: a second hang-up or transfer of the same call awaits, or returns,
the first one's outcome. Only a refusal (Twilio answered 4xx/5xx: nothing was done) is
forgotten, so a caller who asks again later is posted again. The auth token is only ever put in the Authorization header; log lines
name the action, the CallSid and Twilio's code, nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
import msgspec

from voicecall.config import E164, TwilioConfig

log = logging.getLogger("voicecall.twilio.rest")

API_VERSION = "2010-04-01"
#: Twilio's "resource not found": the call is gone (ended) or never existed.
NOT_FOUND_CODE = 20404
_MAX_REMEMBERED = 4096  # (call, action) outcomes kept for idempotency; oldest dropped first


@dataclass(frozen=True)
class TwilioCredentials:
    """AccountSid and auth token; the token never shows in repr or logs."""

    account_sid: str
    auth_token: str = field(repr=False)

    @classmethod
    def from_env(cls, cfg: TwilioConfig, environ: Mapping[str, str] = os.environ) -> TwilioCredentials | None:
        sid, token = environ.get(cfg.account_sid_env, ""), environ.get(cfg.auth_token_env, "")
        return cls(sid, token) if sid and token else None


class TwilioRestError(Exception):
    """A REST request failed. `status` is None when no answer came (timeout, network): the
    request may or may not have taken effect, so it is not re-sent. Recoverable: the call goes on."""

    def __init__(self, action: str, call_sid: str, status: int | None, code: int | None, message: str,
                 more_info: str = "") -> None:
        self.action, self.call_sid = action, call_sid
        self.status, self.code, self.message, self.more_info = status, code, message, more_info
        where = f"HTTP {status}" if status is not None else "no answer"
        code_text = f" code {code}" if code is not None else ""
        super().__init__(f"Twilio REST {action} of {call_sid or 'a new call'} failed: {where}{code_text}: {message}")


class TwilioNotConfigured(TwilioRestError):
    """No credentials in the environment (recoverable: the caller says it cannot do that)."""


class CallResource(msgspec.Struct, kw_only=True):
    """The fields of Twilio's Call resource that we use (others are ignored)."""

    sid: str
    status: str = ""
    to: str = ""
    from_: str = msgspec.field(default="", name="from")
    direction: str = ""
    answered_by: str | None = None


class _ErrorBody(msgspec.Struct):
    code: int | None = None
    message: str = ""
    more_info: str = ""


def basic_auth_header(account_sid: str, auth_token: str) -> str:
    """The HTTP Basic `Authorization` value (built here: aiohttp's BasicAuth is deprecated)."""
    return "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")


def dial_twiml(number: str, caller_id: str = "") -> str:
    """`<Response><Dial>number</Dial></Response>`, built by twilio's TwiML writer (it escapes)."""
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.dial(number, caller_id=caller_id or None)
    return str(response)


class TwilioRest:
    """Async Twilio REST client for one account; owned by the telephony process (`close()`)."""

    def __init__(self, cfg: TwilioConfig, credentials: TwilioCredentials | None) -> None:
        self.cfg = cfg
        self._credentials = credentials
        self._base = cfg.api_base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._outcomes: OrderedDict[tuple[str, str], asyncio.Task[CallResource]] = OrderedDict()

    @classmethod
    def from_config(cls, cfg: TwilioConfig, environ: Mapping[str, str] = os.environ) -> TwilioRest:
        return cls(cfg, TwilioCredentials.from_env(cfg, environ))

    @property
    def configured(self) -> bool:
        """True when credentials exist (REST calls can be made)."""
        return self._credentials is not None

    async def close(self) -> None:
        for task in self._outcomes.values():
            task.cancel()
        self._outcomes.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- calls ---------------------------------------------------------------------------------

    async def update_call(self, call_sid: str, action: str, form: Mapping[str, str]) -> CallResource:
        """POST `form` to the live call, at most once per (call_sid, action)."""
        return await self._once((call_sid, action), lambda: self._post(action, call_sid, f"Calls/{call_sid}.json", form))

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (Status=completed). True if it ended or was already gone; False on failure."""
        try:
            await self.update_call(call_sid, "hang-up", {"Status": "completed"})
            return True
        except TwilioRestError as exc:
            if exc.status == 404 or exc.code == NOT_FOUND_CODE:
                return True  # already ended: that is what we wanted
            return False

    async def transfer(self, call_sid: str, number: str) -> CallResource:
        """Cold transfer: replace the call's TwiML with `<Dial>number</Dial>` (ends our stream)."""
        if not E164.fullmatch(number):
            raise TwilioRestError("transfer", call_sid, None, None, f"not an E.164 number: {number!r}")
        twiml = dial_twiml(number, self.cfg.caller_id)
        return await self.update_call(call_sid, "transfer", {"Twiml": twiml})

    async def create_call(self, to: str, *, url: str = "", twiml: str = "", from_: str = "",
                          status_callback: str = "", status_callback_events: Sequence[str] = (),
                          machine_detection: str = "", async_amd: bool = False,
                          async_amd_status_callback: str = "", ring_timeout_s: int | None = None,
                          time_limit_s: int | None = None, key: str = "") -> CallResource:
        """Place an outbound call. `key` makes it idempotent (same key: one POST); empty: always posts.

        `machine_detection` is Twilio's MachineDetection ("Enable" or "DetectMessageEnd");
        `async_amd` reports AnsweredBy to `async_amd_status_callback` instead of delaying the call.
        """
        caller = from_ or self.cfg.caller_id
        form: list[tuple[str, str]] = [("To", to), ("From", caller)]
        form += [("Url", url)] if url else [("Twiml", twiml)] if twiml else []
        if status_callback:
            form.append(("StatusCallback", status_callback))
            form += [("StatusCallbackEvent", event) for event in status_callback_events]
        if machine_detection:
            form.append(("MachineDetection", machine_detection))
            if async_amd:
                form.append(("AsyncAmd", "true"))
                if async_amd_status_callback:
                    form.append(("AsyncAmdStatusCallback", async_amd_status_callback))
        if ring_timeout_s is not None:
            form.append(("Timeout", str(ring_timeout_s)))
        if time_limit_s is not None:
            form.append(("TimeLimit", str(time_limit_s)))
        post = lambda: self._post("create", "", "Calls.json", form)  # noqa: E731
        if not key:
            return await post()
        return await self._once(("create", key), post)

    def forget(self, call_sid: str) -> None:
        """Drop the remembered outcomes of a call that ended (bounded anyway)."""
        for key in [k for k in self._outcomes if k[0] == call_sid]:
            del self._outcomes[key]

    # -- plumbing ------------------------------------------------------------------------------

    async def _once(self, key: tuple[str, str], make: Callable[[], Awaitable[CallResource]]) -> CallResource:
        task = self._outcomes.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._outcomes[key] = task
            task.add_done_callback(lambda t: self._forget_refusal(key, t))
            while len(self._outcomes) > _MAX_REMEMBERED:
                _, old = self._outcomes.popitem(last=False)
                old.cancel()
        # Shielded: a caller cancelled mid-request (barge-in, hang-up) must not abort a POST that
        # Twilio may already be acting on; the outcome stays remembered either way.
        return await asyncio.shield(task)

    def _forget_refusal(self, key: tuple[str, str], task: asyncio.Task[CallResource]) -> None:
        if task.cancelled() or self._outcomes.get(key) is not task:
            return
        error = task.exception()
        if isinstance(error, TwilioRestError) and error.status is not None:
            del self._outcomes[key]  # Twilio answered "no": nothing happened, asking again may post again

    async def _post(self, action: str, call_sid: str, resource: str,
                    form: Mapping[str, str] | Sequence[tuple[str, str]]) -> CallResource:
        creds = self._credentials
        if creds is None:
            raise TwilioNotConfigured(action, call_sid, None, None,
                                      f"${self.cfg.account_sid_env} and ${self.cfg.auth_token_env} must both be set")
        url = f"{self._base}/{API_VERSION}/Accounts/{creds.account_sid}/{resource}"
        session = self._client_session()
        headers = {"Authorization": basic_auth_header(creds.account_sid, creds.auth_token)}
        try:
            async with session.post(url, data=form, headers=headers) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The exception's text could echo request details; log only its type.
            log.warning("Twilio REST %s of %s: no answer (%s); not re-sent", action, call_sid or "a new call",
                        type(exc).__name__)
            raise TwilioRestError(action, call_sid, None, None, f"no answer ({type(exc).__name__})") from None
        if status >= 400:
            error = _decode_error(body)
            log.warning("Twilio REST %s of %s: HTTP %d code %s: %s", action, call_sid or "a new call", status,
                        error.code, error.message)
            raise TwilioRestError(action, call_sid, status, error.code, error.message, error.more_info)
        try:
            call = msgspec.json.decode(body, type=CallResource)
        except msgspec.DecodeError as exc:
            raise TwilioRestError(action, call_sid, status, None, f"unreadable answer: {exc}") from None
        log.info("Twilio REST %s of %s: HTTP %d, call %s is %s", action, call_sid or "a new call", status,
                 call.sid, call.status)
        return call

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s, sock_connect=self.cfg.connect_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
        return self._session


def _decode_error(body: bytes) -> _ErrorBody:
    try:
        return msgspec.json.decode(body, type=_ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = body[:200].decode("utf-8", "replace").strip()
        return _ErrorBody(message=text or "no error body")


__all__ = ["CallResource", "TwilioCredentials", "TwilioNotConfigured", "TwilioRest", "TwilioRestError",
           "dial_twiml"]

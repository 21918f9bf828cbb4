"""A scripted stand-in for Twilio's REST API (api.twilio.com), for tests and local runs.

A real aiohttp server speaking Twilio's wire format: form-encoded POSTs with HTTP Basic auth to
``/2010-04-01/Accounts/{AccountSid}/Calls.json`` (create) and ``.../Calls/{CallSid}.json``
(update, fetch), JSON Call resources back, Twilio's error bodies
(``{"code", "message", "more_info", "status"}``). Every request is recorded; the next answers can
be scripted (an error, a delay that outlasts the client's timeout); status and AMD callbacks can be
sent to the URLs a created call named, signed with ``X-Twilio-Signature`` like Twilio's.

    cloud = TwilioCloud()
    base_url = await cloud.start()           # point `twilio.api_base_url` here
    cloud.fail_next(500, 20500, "Internal Server Error")
    ...
    await cloud.wait_for(lambda r: "Twiml" in r.form)
    await cloud.stop()
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from voicecall.sim.background import serve
from voicecall.twilio.rest import basic_auth_header

API = "/2010-04-01/Accounts/{account}"
TEST_ACCOUNT_SID = "AC" + "0" * 32
TEST_AUTH_TOKEN = "sim-auth-token-0123456789abcdef"


@dataclass
class CloudRequest:
    """One request as the cloud received it."""

    method: str
    path: str
    call_sid: str  # "" for a create
    form: dict[str, list[str]]
    authorized: bool
    #: time.monotonic_ns() when it arrived (tests compare it with the caller's mark echoes)
    at_ns: int = 0

    def field(self, name: str) -> str:
        """The first value of a form field ("" if absent)."""
        return self.form.get(name, [""])[0]


@dataclass
class CloudCall:
    """A call the cloud knows (created through it, or first named by an update)."""

    sid: str
    to: str = ""
    from_: str = ""
    status: str = "in-progress"
    direction: str = "inbound"
    twiml: str = ""
    url: str = ""
    status_callback: str = ""
    status_callback_events: list[str] = field(default_factory=list)
    amd_callback: str = ""

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {"sid": self.sid, "account_sid": account_sid, "to": self.to, "from": self.from_,
                "status": self.status, "direction": self.direction, "api_version": "2010-04-01",
                "answered_by": None, "uri": f"{API.format(account=account_sid)}/Calls/{self.sid}.json"}


@dataclass
class _Scripted:
    status: int
    code: int | None
    message: str
    delay_s: float
    match: Callable[[CloudRequest], bool]


class TwilioCloud:
    """The local REST server; `start()` returns its base URL."""

    def __init__(self, account_sid: str = TEST_ACCOUNT_SID, auth_token: str = TEST_AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[CloudRequest] = []
        self.calls: dict[str, CloudCall] = {}
        #: Called with (call, request) after every accepted update (tests end the sim stream on it).
        self.on_update: list[Callable[[CloudCall, CloudRequest], Awaitable[None] | None]] = []
        self._script: list[_Scripted] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(API.format(account="{account}") + "/Calls.json", self._create)
        app.router.add_post(API.format(account="{account}") + "/Calls/{call}.json", self._update)
        app.router.add_get(API.format(account="{account}") + "/Calls/{call}.json", self._fetch)
        self._runner, self.base_url = await serve(app, host, port)
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def env(self) -> dict[str, str]:
        """The environment a voicecall process needs to use this cloud's account."""
        return {"TWILIO_ACCOUNT_SID": self.account_sid, "TWILIO_AUTH_TOKEN": self.auth_token}

    # -- scripting -----------------------------------------------------------------------------

    def fail_next(self, status: int, code: int | None, message: str, *,
                  match: Callable[[CloudRequest], bool] = lambda r: True) -> None:
        """The next request matching `match` gets this Twilio error instead of being served."""
        self._script.append(_Scripted(status, code, message, 0.0, match))

    def delay_next(self, delay_s: float, *, match: Callable[[CloudRequest], bool] = lambda r: True) -> None:
        """The next matching request is answered (normally) only after `delay_s` seconds."""
        self._script.append(_Scripted(0, None, "", delay_s, match))

    async def wait_for(self, predicate: Callable[[CloudRequest], bool], timeout_s: float = 10.0) -> CloudRequest:
        """The first recorded request matching `predicate`, waiting up to `timeout_s` for it."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: any(map(predicate, self.requests))), timeout_s)
        return next(r for r in self.requests if predicate(r))

    def updates(self, call_sid: str) -> list[CloudRequest]:
        return [r for r in self.requests if r.call_sid == call_sid and r.method == "POST"]

    # -- callbacks to the application ------------------------------------------------------------

    async def send_status(self, call_sid: str, status: str, **extra: str) -> int:
        """POST a call status callback (CallStatus=...) to the call's StatusCallback; HTTP status back."""
        call = self.calls[call_sid]
        call.status = status
        params = {"AccountSid": self.account_sid, "CallSid": call_sid, "CallStatus": status, "To": call.to,
                  "From": call.from_, "Direction": call.direction, "ApiVersion": "2010-04-01", **extra}
        return await self._callback(call.status_callback, params)

    async def send_amd(self, call_sid: str, answered_by: str) -> int:
        """POST the async AMD result (AnsweredBy=human|machine_start|...) to AsyncAmdStatusCallback."""
        call = self.calls[call_sid]
        params = {"AccountSid": self.account_sid, "CallSid": call_sid, "AnsweredBy": answered_by,
                  "MachineDetectionDuration": "1500"}
        return await self._callback(call.amd_callback, params)

    async def _callback(self, url: str, params: dict[str, str]) -> int:
        from twilio.request_validator import RequestValidator

        if not url:
            raise ValueError("the call named no callback URL")
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        async with aiohttp.ClientSession() as session, session.post(
                url, data=params, headers={"X-Twilio-Signature": signature}) as response:
            return response.status

    # -- handlers --------------------------------------------------------------------------------

    async def _record(self, request: web.Request, call_sid: str) -> CloudRequest:
        form: dict[str, list[str]] = {}
        if request.method == "POST":
            for key, value in (await request.post()).items():
                form.setdefault(key, []).append(str(value))
        auth = request.headers.get("Authorization", "")
        expected = basic_auth_header(self.account_sid, self.auth_token)
        authorized = secrets.compare_digest(auth, expected) and request.match_info["account"] == self.account_sid
        rec = CloudRequest(request.method, request.path, call_sid, form, authorized, time.monotonic_ns())
        async with self._changed:
            self.requests.append(rec)
            self._changed.notify_all()
        return rec

    async def _scripted(self, rec: CloudRequest) -> web.Response | None:
        for i, item in enumerate(self._script):
            if item.match(rec):
                del self._script[i]
                if item.delay_s:
                    await asyncio.sleep(item.delay_s)
                    return None
                return self._error(item.status, item.code, item.message)
        return None

    def _error(self, status: int, code: int | None, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message, "status": status,
                                  "more_info": f"https://www.twilio.com/docs/errors/{code}"}, status=status)

    async def _create(self, request: web.Request) -> web.Response:
        rec = await self._record(request, "")
        if not rec.authorized:
            return self._error(401, 20003, "Authenticate")
        scripted = await self._scripted(rec)
        if scripted is not None:
            return scripted
        if not rec.field("To"):
            return self._error(400, 21201, "No 'To' number is specified")
        if not rec.field("From"):
            return self._error(400, 21213, "No 'From' number is specified")
        if not rec.field("Url") and not rec.field("Twiml"):
            return self._error(400, 21205, "Url parameter is required.")
        sid = "CA" + secrets.token_hex(16)
        call = CloudCall(sid=sid, to=rec.field("To"), from_=rec.field("From"), status="queued",
                         direction="outbound-api", twiml=rec.field("Twiml"), url=rec.field("Url"),
                         status_callback=rec.field("StatusCallback"),
                         status_callback_events=rec.form.get("StatusCallbackEvent", []),
                         amd_callback=rec.field("AsyncAmdStatusCallback"))
        self.calls[sid] = call
        return web.json_response(call.resource(self.account_sid), status=201)

    async def _update(self, request: web.Request) -> web.Response:
        sid = request.match_info["call"]
        rec = await self._record(request, sid)
        if not rec.authorized:
            return self._error(401, 20003, "Authenticate")
        scripted = await self._scripted(rec)
        if scripted is not None:
            return scripted
        call = self.calls.setdefault(sid, CloudCall(sid=sid))
        if call.status in ("completed", "canceled", "failed", "busy", "no-answer"):
            if rec.field("Twiml") or rec.field("Url"):
                return self._error(400, 21220, "Call is not in-progress. Cannot redirect.")
            return web.json_response(call.resource(self.account_sid))
        status = rec.field("Status")
        if status in ("completed", "canceled"):
            call.status = status
        if rec.field("Twiml"):
            call.twiml = rec.field("Twiml")
        if rec.field("Url"):
            call.url = rec.field("Url")
        for listener in list(self.on_update):
            result = listener(call, rec)
            if result is not None:
                await result
        return web.json_response(call.resource(self.account_sid))

    async def _fetch(self, request: web.Request) -> web.Response:
        sid = request.match_info["call"]
        rec = await self._record(request, sid)
        if not rec.authorized:
            return self._error(401, 20003, "Authenticate")
        if sid not in self.calls:
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(self.calls[sid].resource(self.account_sid))

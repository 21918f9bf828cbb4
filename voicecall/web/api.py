"""The operator REST API: place outbound calls, read call records.

    POST /api/calls        {"to": "+1...", "agent": optional name, "context": optional object}
                           -> 201 {"sid", "status", "to", "from", "agent"}
    GET  /api/calls        -> {"calls": [...]}   (newest first; ?limit=N, at most 200)
    GET  /api/calls/{sid}  -> the call: record, status callbacks, transcript, per-turn latencies

Every request carries `Authorization: Bearer <token>`; the token is the value of the env var
named by `server.api_token_env`. No header -> 401, a wrong token -> 403, and with the variable
unset or empty the API is off (403 for everyone). Errors are JSON `{"error": "..."}`; a Twilio
REST error -> 502 with Twilio's `code` and `message`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from voicecall.agents import AgentDirectory, is_e164
from voicecall.config import Config, RecordsConfig
from voicecall.outbound import OutboundCall, OutboundCalls
from voicecall.records import CallRecords, call_as_dict, find_call, recent_calls
from voicecall.storage.engine import Db, RecordsUnavailable, connect
from voicecall.twilio.rest import CallResource, TwilioNotConfigured, TwilioRestError

log = logging.getLogger("voicecall.api")

MAX_LIST = 200
MAX_BODY_BYTES = 16 * 1024


#: Places a call to an E.164 number through Twilio and returns its Call resource
#: (`voicecall.outbound.place_call` bound to the REST client); raises TwilioRestError.
PlaceCall = Callable[[str], Awaitable[CallResource]]


@dataclass
class ApiDeps:
    cfg: Config
    agents: AgentDirectory
    outbound: OutboundCalls
    records: CallRecords | None
    #: None when Twilio credentials, `twilio.caller_id` or `server.public_url` are missing
    #: (`why_no_dialer` says which)
    place_call: PlaceCall | None
    caller_id: str = ""
    why_no_dialer: str = ""


API_KEY = web.AppKey("voicecall_api", ApiDeps)


def add_api(app: web.Application, deps: ApiDeps, environ: Mapping[str, str] = os.environ) -> None:
    token = environ.get(deps.cfg.server.api_token_env, "")
    if not token:
        log.info("$%s is not set: the REST API (/api/calls) is off", deps.cfg.server.api_token_env)
    app[API_KEY] = deps

    def guarded(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            _authorize(request, token, deps.cfg.server.api_token_env)
            return await handler(request)

        return wrapper

    app.router.add_post("/api/calls", guarded(create_call))
    app.router.add_get("/api/calls", guarded(list_calls))
    app.router.add_get("/api/calls/{sid}", guarded(get_call))


def _error(status: type[web.HTTPException], error: str, **extra: Any) -> web.HTTPException:
    return status(text=json.dumps({"error": error, **extra}), content_type="application/json")


def _authorize(request: web.Request, token: str, env_name: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not token:
        raise _error(web.HTTPForbidden, f"the API is off: set ${env_name} (server.api_token_env) to enable it")
    if not header:
        raise web.HTTPUnauthorized(text=json.dumps({"error": "missing Authorization: Bearer <token>"}),
                                   content_type="application/json", headers={"WWW-Authenticate": "Bearer"})
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
        log.warning("403 %s %s from %s: wrong API token", request.method, request.path, request.remote)
        raise _error(web.HTTPForbidden, "wrong API token")


async def create_call(request: web.Request) -> web.Response:
    deps = request.app[API_KEY]
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _error(web.HTTPBadRequest, f"body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(await request.text() or "null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _error(web.HTTPBadRequest, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, 'expected a JSON object like {"to": "+15551234567"}')
    unknown = sorted(set(body) - {"to", "agent", "context"})
    if unknown:
        raise _error(web.HTTPBadRequest, f"unknown field(s) {', '.join(unknown)} (expected to, agent, context)")
    to = body.get("to")
    if not isinstance(to, str) or not is_e164(to):
        raise _error(web.HTTPBadRequest, f"to: {to!r} is not an E.164 phone number (a + and up to 15 digits, "
                                         "like +15551234567)")
    agent_name = body.get("agent") or ""
    if not isinstance(agent_name, str):
        raise _error(web.HTTPBadRequest, f"agent: expected a name, got {agent_name!r}")
    if agent_name and deps.agents.get(agent_name) is None:
        known = ", ".join(sorted(deps.agents.by_name))
        raise _error(web.HTTPBadRequest, f"agent: no agent named {agent_name!r} (known: {known})")
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise _error(web.HTTPBadRequest, "context: expected a JSON object")
    agent = deps.agents.get(agent_name) if agent_name else deps.agents.default
    assert agent is not None
    if deps.place_call is None:
        raise _error(web.HTTPServiceUnavailable, f"cannot place calls: {deps.why_no_dialer}")
    try:
        resource = await deps.place_call(to)
    except TwilioNotConfigured as exc:
        raise _error(web.HTTPServiceUnavailable, f"cannot place calls: {exc.message}") from None
    except TwilioRestError as exc:  # the REST client logged it (without credentials)
        what = f"HTTP {exc.status}" if exc.status is not None else "no answer"
        raise _error(web.HTTPBadGateway, f"Twilio did not create the call ({what}): {exc.message}", code=exc.code,
                     message=exc.message, twilio_status=exc.status) from None
    sid = resource.sid
    deps.outbound.add(OutboundCall(sid=sid, to=to, agent=agent.name, context=context))
    if deps.records is not None:
        deps.records.outbound_created(sid, to, deps.caller_id, agent.name, json.dumps(context))
    log.info("outbound call %s to %s placed (agent %s)", sid, to, agent.name)
    return web.json_response({"sid": sid, "status": resource.status or "queued", "to": to, "from": deps.caller_id,
                              "agent": agent.name}, status=201)


async def list_calls(request: web.Request) -> web.Response:
    deps = request.app[API_KEY]
    try:
        limit = max(1, min(MAX_LIST, int(request.query.get("limit", "50"))))
    except ValueError:
        raise _error(web.HTTPBadRequest, "limit: expected a number") from None
    return web.json_response({"calls": await asyncio.to_thread(_read_list, deps.cfg.records, limit)})


async def get_call(request: web.Request) -> web.Response:
    deps = request.app[API_KEY]
    sid = request.match_info["sid"]
    found = await asyncio.to_thread(_read_one, deps.cfg.records, sid)
    if found is None:
        raise _error(web.HTTPNotFound, f"no call {sid!r}")
    return web.json_response(found)


# ---------------------------------------------------------------- reads (in a thread)


def _open(records: RecordsConfig) -> Db | None:
    try:
        return connect(records.resolved_url(), password_env=records.password_env, readonly=True,
                       connect_timeout_s=records.connect_timeout_s)
    except RecordsUnavailable:
        return None


def _outbound(db: Db, sid: str) -> dict[str, Any] | None:
    row = db.one("SELECT * FROM outbound_calls WHERE call_sid = ?", (sid,))
    if row is None:
        return None
    try:
        row["context"] = json.loads(row.get("context") or "{}")
    except json.JSONDecodeError:
        pass
    return row


def _read_one(records: RecordsConfig, sid: str) -> dict[str, Any] | None:
    db = _open(records)
    if db is None:
        return None
    try:
        call = find_call(db, sid)
        call_sid = (call["call_sid"] or sid) if call is not None else sid
        outbound = _outbound(db, call_sid)
        if call is None and outbound is None:
            return None
        data: dict[str, Any] = call_as_dict(db, call) if call is not None else {"call_sid": sid, "turns": []}
        data["sid"] = call_sid
        data["outbound"] = outbound
        data["direction"] = data.get("direction") or ("outbound" if outbound else "inbound")
        data["status_callbacks"] = db.query(
            "SELECT at, status, answered_by, detail FROM call_status WHERE call_sid = ? ORDER BY id", (call_sid,))
        return data
    finally:
        db.close()


def _read_list(records: RecordsConfig, limit: int) -> list[dict[str, Any]]:
    db = _open(records)
    if db is None:
        return []
    try:
        out = [{**call, "sid": call.get("call_sid") or ""} for call in recent_calls(db, limit)]
        seen = {c["sid"] for c in out}
        pending = db.query("SELECT * FROM outbound_calls ORDER BY created_at DESC LIMIT ?", (limit,))
        for row in pending:  # placed, but never connected to us (busy, no answer, failed, ringing now)
            if row["call_sid"] not in seen:
                out.append({"sid": row["call_sid"], "direction": "outbound", "to_number": row["to_number"],
                            "from_number": row["from_number"], "agent": row["agent"], "status": row["status"],
                            "answered_by": row["answered_by"], "started_at": row["created_at"]})
        out.sort(key=lambda c: c.get("started_at") or 0, reverse=True)
        return out[:limit]
    finally:
        db.close()

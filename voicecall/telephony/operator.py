"""The operator features of the telephony process, in one place: agent profiles, outbound calls
with answering-machine detection, Twilio's status callbacks, call recordings, the REST API.

    TelephonyProcess.run -> Operator(cfg, records, registry) -> operator.install(app)
        POST /twilio/voice   the webhook asks `webhook_parameters()`: the chosen agent goes to
                             the media stream as <Parameter name="agent">
        POST /twilio/status  every call status callback -> `on_status()` -> records
        POST /twilio/amd     (signed) AnsweredBy -> records + the live call's session
        /api/calls           voicecall/web/api.py
    per call: `prepare_call()` (agent, direction, a CallRecording the media stream feeds) and, for
              outbound calls, `outbound_opening()` (voicecall/conversation/outbound_call.py)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from voicecall.agents import AgentDirectory
from voicecall.config import Config
from voicecall.conversation.outbound_call import OutboundOpening
from voicecall.outbound import AMD_PATH, OutboundCalls, place_call
from voicecall.recording import RecordingWriter
from voicecall.records import CallRecords
from voicecall.twilio.rest import CallResource, TwilioRest
from voicecall.web.api import ApiDeps, add_api

if TYPE_CHECKING:
    from voicecall.conversation.reply import CallInfo
    from voicecall.conversation.session import CallSession
    from voicecall.twilio.handler import CallStream

log = logging.getLogger("voicecall.operator")



class Operator:
    """Process-wide operator services; built once by the telephony process."""

    def __init__(self, cfg: Config, records: CallRecords | None, rest: TwilioRest,
                 registry: CollectorRegistry | None = None, environ: Mapping[str, str] = os.environ) -> None:
        self.cfg = cfg
        self.records = records
        self.environ = environ
        self.agents = AgentDirectory(cfg)
        self.outbound = OutboundCalls()
        self.recordings: RecordingWriter | None = None
        if cfg.records.recordings_dir:
            self.recordings = RecordingWriter(cfg.records.recordings_dir, cfg.records.keep_recordings_days, registry)
        self.rest = rest
        missing = [what for what, ok in (
            (f"${cfg.twilio.account_sid_env} and ${cfg.twilio.auth_token_env}", rest.configured),
            ("twilio.caller_id", bool(cfg.twilio.caller_id)),
            ("server.public_url (Twilio must reach our webhook)", bool(cfg.server.public_url)),
        ) if not ok]
        self.why_no_dialer = "set " + ", ".join(missing) if missing else ""
        voiced = [a.name for a in cfg.agents if a.voice and a.voice != cfg.tts.voice]
        if voiced:
            log.warning("agent profile voice is not used yet (every call speaks with tts.voice): %s", ", ".join(voiced))

    def install(self, app: web.Application) -> None:
        """Routes and hooks on the telephony app (before it starts)."""
        from voicecall.telephony.app import STATUS_LISTENER, WEBHOOK_PARAMETERS

        app[OPERATOR] = self
        app[WEBHOOK_PARAMETERS] = self.webhook_parameters
        app[STATUS_LISTENER] = self.on_status
        public_url = self.cfg.server.public_url

        async def place(to: str) -> CallResource:
            return await place_call(self.rest, public_url, to)

        add_api(app, ApiDeps(cfg=self.cfg, agents=self.agents, outbound=self.outbound, records=self.records,
                             place_call=None if self.why_no_dialer else place, caller_id=self.cfg.twilio.caller_id,
                             why_no_dialer=self.why_no_dialer), environ=self.environ)
        app.router.add_post(AMD_PATH, amd_callback)

    def close(self) -> None:
        if self.recordings is not None:
            self.recordings.close()

    # ------------------------------------------------------------------ per call

    def webhook_parameters(self, params: Mapping[str, str]) -> dict[str, str]:
        """Extra <Parameter>s for the stream: the agent it was placed with, else the one for `To`."""
        placed = self.outbound.get(params.get("CallSid", ""))
        return {"agent": self.agents.choose(params.get("To", ""), placed.agent if placed else "").name}

    def prepare_call(self, call: CallInfo, params: Mapping[str, str], stream: CallStream) -> None:
        """A stream started: its agent (the `agent` parameter, else by `To`), direction, recording."""
        placed = self.outbound.get(call.call_sid)
        agent = self.agents.choose(call.to_number, params.get("agent") or (placed.agent if placed else ""))
        call.agent = agent.name
        call.greeting = self.agents.greeting(agent)
        call.knowledge = agent.knowledge
        call.transfer_number = agent.transfer_number
        call.tools = list(agent.tools)
        context = placed.context if placed is not None else {}
        if agent.system_prompt or context:
            call.system_prompt = self.agents.system_prompt(agent, context)
        if placed is not None or params.get("Direction", "").startswith("outbound"):
            call.direction = "outbound"
        if self.recordings is not None:
            recording = self.recordings.open(call.call_sid or call.stream_sid)
            call.recording_path = str(recording.path)
            stream.record(recording)

    def outbound_opening(self, session: CallSession) -> OutboundOpening | None:
        """For an outbound call: greet after "Hello?" or a timeout; voicemail on a machine."""
        if session.info.direction != "outbound":
            return None
        agent = self.agents.get(session.info.agent) or self.agents.default
        return OutboundOpening(session, self.outbound, session.info.call_sid, self.cfg.call.outbound_greet_after_s,
                               self.agents.voicemail_message(agent))

    # ------------------------------------------------------------------ Twilio callbacks

    def on_status(self, params: Mapping[str, str]) -> None:
        """A (signature-checked) status callback: kept with the call."""
        sid = params.get("CallSid", "")
        status = params.get("CallStatus", "")
        if not sid or not status or params.get("StreamSid"):
            return  # stream events are logged by the route; only call progress is recorded
        self.outbound.status(sid, status)
        if self.records is not None:
            detail = ", ".join(f"{k}={params[k]}" for k in ("CallDuration", "SipResponseCode", "ErrorCode") if params.get(k))
            self.records.call_status(sid, status, params.get("AnsweredBy", ""), detail)

    def on_amd(self, params: Mapping[str, str]) -> None:
        sid = params.get("CallSid", "")
        answered_by = params.get("AnsweredBy", "unknown")
        log.info("call %s answered by %s (detection took %s ms)", sid, answered_by, params.get("MachineDetectionDuration", "?"))
        if self.records is not None and sid:
            self.records.call_status(sid, "amd", answered_by, f"MachineDetectionDuration={params.get('MachineDetectionDuration', '')}")
        self.outbound.answered(sid, answered_by)


OPERATOR = web.AppKey("voicecall_operator", Operator)


async def amd_callback(request: web.Request) -> web.Response:
    """Twilio's asynchronous answering-machine verdict (signed like every webhook)."""
    from voicecall.telephony.app import SIGNATURES

    params = await request.app[SIGNATURES].check_webhook(request)
    request.app[OPERATOR].on_amd(params)
    return web.Response(status=204)

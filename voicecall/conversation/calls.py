"""Every live call of the telephony process: creates sessions, fans worker status out to them.

`Conversations` owns the process-wide pieces a call needs (worker links, records, metrics, the
canned greeting/apology audio) and the set of live `CallSession`s, so draining and `/calls`
have one place to look.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ipc.messages import SentenceDone, SynthesisFailed, WorkerEvent, WorkerState
from ipc.ring import Record
from voicecall.config import Config
from voicecall.conversation.canned import CANNED_CALL_ID, CannedAudio, incarnation_base
from voicecall.conversation.http_tools import HttpTools
from voicecall.conversation.links import WorkerLinks
from voicecall.conversation.metrics import CallMetrics
from voicecall.conversation.session import CallInfo, CallSession, SessionDeps
from voicecall.records import CallRecords
from voicecall.twilio.handler import CallStream
from voicecall.twilio.playout import MarkHandle
from voicecall.twilio.protocol import Start
from voicecall.twilio.rest import TwilioRest

if TYPE_CHECKING:
    from voicecall.conversation.outbound_call import OutboundOpening
    from voicecall.telephony.operator import Operator

log = logging.getLogger("voicecall.telephony")


class Conversations:
    """The registry of live calls and the services they share."""

    def __init__(self, cfg: Config, links: WorkerLinks, records: CallRecords | None, metrics: CallMetrics | None = None) -> None:
        self.cfg = cfg
        self.links = links
        self.metrics = metrics or CallMetrics()
        self.canned = CannedAudio(cfg.call.greeting, cfg.call.apology, cfg.call.missed_words,
                                  tuple(a.greeting for a in cfg.agents), cfg.call.wait_filler)
        #: The one Twilio REST client (hang-up, transfer) and the operator's HTTP tools; both
        #: closed by `close_rest`.
        self.rest = TwilioRest.from_config(cfg.twilio)
        self.http_tools = HttpTools(cfg.tools) if cfg.tools else None
        self.deps = SessionDeps(cfg=cfg, links=links, records=records, metrics=self.metrics, canned=self.canned,
                                rest=self.rest, http_tools=self.http_tools)
        self.sessions: dict[int, CallSession] = {}
        self._ids = itertools.count(incarnation_base() + 1)
        self._empty = asyncio.Event()
        self._empty.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Agent profiles, outbound calls and recordings (voicecall/telephony/operator.py); None in
        #: an app built without them.
        self.operator: Operator | None = None
        #: Called after each call is closed and forgotten (telephony's garbage collector).
        self.closed_listeners: list[Callable[[], None]] = []
        links.status_listeners.append(self._on_worker_status)
        links.register(CANNED_CALL_ID, self._on_canned)

    @property
    def listeners(self) -> list[Any]:
        """Observers of call events (the softphone transcript and /calls views)."""
        return self.deps.listeners

    def _on_canned(self, worker: str, rec: Record, msg: WorkerEvent | None) -> None:
        match msg:
            case SentenceDone() | SynthesisFailed() | None if worker == "tts":
                self.canned.on_record(rec, msg)

    def _on_worker_status(self, worker: str, state: WorkerState, detail: str) -> None:
        if state is WorkerState.RESTARTING:
            self.metrics.worker_restarts.labels(worker).inc()
        if worker == "tts" and state is WorkerState.READY:
            for req in self.canned.requests():  # (re)synthesize the greeting and apology
                self.links["tts"].send(req, CANNED_CALL_ID, req.turn_id, req.seq)
        for session in list(self.sessions.values()):
            session.on_worker_status(worker, state)

    def open(self, info: CallInfo, port: CallStream) -> CallSession:
        """Start the conversation of a new call (greeting included)."""
        session = CallSession(next(self._ids), info, port, self.deps)
        self.sessions[session.call_id] = session
        self._empty.clear()
        session.start()
        return session

    async def close(self, session: CallSession, reason: str) -> None:
        await session.close(reason)
        self.sessions.pop(session.call_id, None)
        if not self.sessions:
            self._empty.set()
        for listener in self.closed_listeners:
            listener()

    def track(self, task: asyncio.Task[Any]) -> None:
        """Own a background task until it finishes (cancelled by `cancel_tasks`)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def close_rest(self) -> None:
        await self.rest.close()
        if self.http_tools is not None:
            await self.http_tools.close()

    def handler_factory(self) -> ConversationHandler:
        """The `CallHandlerFactory` given to `create_app`."""
        return ConversationHandler(self)

    def count(self) -> int:
        return len(self.sessions)

    async def wait_empty(self, timeout_s: float) -> bool:
        """True if every call ended within `timeout_s`."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.snapshot() for s in self.sessions.values()]


class StreamPort:
    """A `CallStream` whose hang-up goes through Twilio's REST API when it can (else closes the socket)."""

    def __init__(self, stream: CallStream, call_sid: str, rest: TwilioRest) -> None:
        self._stream = stream
        self._call_sid = call_sid
        self._rest = rest

    def play(self, mulaw: bytes, turn_id: int | None = None) -> None:
        self._stream.play(mulaw, turn_id)

    def mark(self, name: str, turn_id: int | None = None) -> MarkHandle:
        return self._stream.mark(name, turn_id)

    def clear(self) -> int:
        return self._stream.clear()

    def first_sent_ns(self, turn_id: int) -> int | None:
        return self._stream.first_sent_ns(turn_id)

    def tap_played(self, tap: Callable[[bytes, int], None]) -> None:
        self._stream.tap_played(tap)

    async def hang_up(self, reason: str) -> None:
        from voicecall.twilio.hangup import complete_call

        if await complete_call(self._rest, self._call_sid):
            return  # Twilio sends `stop` and closes the stream itself
        await self._stream.hang_up(reason)


class ConversationHandler:
    """The real `CallHandler`: one per Media Stream, mapping its events onto a `CallSession`."""

    def __init__(self, conversations: Conversations) -> None:
        self._conversations = conversations
        self.session: CallSession | None = None
        self.opening: OutboundOpening | None = None

    def on_start(self, stream: CallStream, start: Start) -> None:
        info = start.start
        params = info.custom_parameters or {}
        call = CallInfo(call_sid=info.call_sid or params.get("CallSid", ""), stream_sid=info.stream_sid,
                        from_number=params.get("From", ""), to_number=params.get("To", ""))
        if not self._conversations.links.ready():
            log.warning("stream %s arrived while not ready: hanging up", info.stream_sid)
            self._conversations.metrics.calls_refused.inc()
            task = asyncio.get_running_loop().create_task(stream.hang_up("not ready"))
            self._conversations.track(task)
            return
        operator = self._conversations.operator
        if operator is not None:
            operator.prepare_call(call, params, stream)  # agent, direction, recording
        port = StreamPort(stream, call.call_sid, self._conversations.rest)
        self.session = self._conversations.open(call, port)
        if operator is not None:
            self.opening = operator.outbound_opening(self.session)

    def on_media(self, frame: bytes, chunk: int, media_ms: int, arrival_ns: int) -> None:
        if self.session is not None:
            self.session.on_media(frame, chunk, media_ms, arrival_ns)

    def on_mark(self, mark: MarkHandle) -> None:
        if self.session is not None:
            self.session.on_mark(mark.name, mark.played, mark.done_ns or None)

    def on_dtmf(self, digit: str) -> None:
        if self.session is not None:
            self.session.on_dtmf(digit)

    async def on_close(self, reason: str) -> None:
        if self.opening is not None:
            self.opening.close()
        if self.session is not None:
            await self._conversations.close(self.session, reason)

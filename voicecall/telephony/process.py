"""The telephony process: aiohttp server + worker links + the supervisor's control channel.

It binds its port at once so `/healthz` answers while the workers load (503 until every
worker is ready; calls meanwhile get a polite busy answer). The control channel is read on
the event loop through `loop.add_reader`; no thread polls anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

import msgspec
from aiohttp import web

from ipc.channel import ChannelClosed, ControlChannel
from ipc.child import bootstrap_child
from ipc.messages import Drain, Drained, Failed, HealthCheck, HealthReply, Ready, Stop, ToChild, WorkerStatus
from voicecall.config import Config
from voicecall.conversation.links import WorkerLinks
from voicecall.topology import TelephonySpec

log = logging.getLogger("voicecall.telephony")


def telephony_main(spec: TelephonySpec) -> None:
    """Entry point of the telephony process (spawn target)."""
    bootstrap_child("telephony", spec.log_level, spec.death)
    cfg = msgspec.json.decode(spec.config_json, type=Config)
    code = 0
    try:
        code = asyncio.run(TelephonyProcess(cfg, spec).run())
    except Exception:
        log.exception("telephony failed")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class TelephonyProcess:
    """Owns the web server, the worker links and the control loop of one telephony incarnation."""

    def __init__(self, cfg: Config, spec: TelephonySpec) -> None:
        self.cfg = cfg
        self.spec = spec
        assert spec.control is not None
        self.control = ControlChannel(spec.control, ToChild)
        self.links = WorkerLinks(spec.rings)
        self._stop = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self.app: web.Application | None = None
        self.conversations: Any = None
        self.records: Any = None

    async def run(self) -> int:
        """Serve until Stop; returns the exit code (1: start-up failed and the supervisor was told why)."""
        t0 = time.monotonic()
        from voicecall.conversation.calls import Conversations
        from voicecall.records import CallRecords
        from voicecall.telephony.app import create_app
        from voicecall.telephony.garbage import CallGarbageCollector
        from voicecall.twilio.security import check_bind
        from voicecall.web.views import add_views

        check_bind(self.cfg.server)
        self.records = await asyncio.to_thread(self._open_records, CallRecords)
        if self.records is None:
            return 1
        self.links.start()
        await asyncio.to_thread(self.records.end_abandoned_calls)  # a previous incarnation was killed mid-call (README "Faults")
        self.conversations = Conversations(self.cfg, self.links, self.records)
        garbage = CallGarbageCollector()
        self.conversations.closed_listeners.append(garbage.call_ended)
        self.app = create_app(self.cfg, handler_factory=self.conversations.handler_factory, readiness=self.links.readiness)
        add_views(self.app, self.conversations, self.cfg)
        from voicecall.telephony.operator import Operator

        self.conversations.operator = operator = Operator(self.cfg, self.records, self.conversations.rest,
                                                          self.conversations.metrics.registry)
        operator.install(self.app)
        add_observability(self.app, self.conversations, self.links)
        runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.server.host, self.cfg.server.port, reuse_address=True)
        await site.start()
        garbage.freeze_startup()
        loop = asyncio.get_running_loop()
        loop.add_reader(self.control.fileno(), self._on_control)
        self.control.send(Ready(worker="telephony", load_s=time.monotonic() - t0,
                                detail=f"listening on {self.cfg.server.host}:{self.cfg.server.port}"))
        try:
            await self._stop.wait()
        finally:
            loop.remove_reader(self.control.fileno())
            if self._drain_task is not None:
                self._drain_task.cancel()
            await runner.cleanup()  # closes live streams; their sessions close and record the end
            self.conversations.cancel_tasks()
            await self.conversations.close_rest()
            garbage.close()  # after the last session closed: its end scheduled a collection too
            operator.close()  # recordings: the last writes of the streams just closed
            self.records.close()
            self.links.close()
        return 0

    def _open_records(self, records_class: Any) -> Any:
        """Connect and migrate (off the loop); a database that is away or too new fails start-up, saying why."""
        from voicecall.records import RecordsUnavailable, SchemaTooNew

        rc = self.cfg.records
        try:
            return records_class(rc.resolved_url(), instance=self.cfg.server.instance(), password_env=rc.password_env,
                                 buffer_max=rc.buffer_max, connect_timeout_s=rc.connect_timeout_s)
        except (RecordsUnavailable, SchemaTooNew) as exc:
            log.error("%s", exc)
            self.control.send(Failed(worker="telephony", reason=str(exc), recoverable=False))
            return None

    def _on_control(self) -> None:
        try:
            while self.control.poll(0):
                msg = self.control.recv()
                if msg is not None:
                    self._handle(msg)
        except ChannelClosed:
            log.warning("supervisor channel closed; stopping")
            self._stop.set()

    def _handle(self, msg: ToChild) -> None:
        if isinstance(msg, HealthCheck):
            self.control.send(HealthReply(nonce=msg.nonce, worker="telephony", busy_calls=self.live_calls()))
        elif isinstance(msg, WorkerStatus):
            self.links.set_state(msg.worker, msg.state, msg.detail, msg.restarts)
        elif isinstance(msg, Drain):
            self.links.draining = True
            if self._drain_task is not None:
                self._drain_task.cancel()
            self._drain_task = asyncio.get_running_loop().create_task(self._drain(msg.deadline_s))
        elif isinstance(msg, Stop):
            self._stop.set()

    def live_calls(self) -> int:
        return self.conversations.count() if self.conversations is not None else 0

    async def _drain(self, deadline_s: float) -> None:
        """Refuse new calls, let live ones finish up to the deadline, then end the rest."""
        from voicecall.telephony.app import end_all_calls, set_draining

        assert self.app is not None
        set_draining(self.app)
        live = self.live_calls()
        if live:
            log.info("draining: waiting up to %.0f s for %d live call(s)", deadline_s, live)
        finished = await self.conversations.wait_empty(deadline_s)
        cut = 0 if finished else self.live_calls()
        if cut:
            log.warning("drain deadline reached: ending %d live call(s)", cut)
            await end_all_calls(self.app, reason="server shutting down")
            await self.conversations.wait_empty(2.0)
        try:
            self.control.send(Drained(calls_ended=live - cut, calls_cut=cut))
        except ChannelClosed:
            pass


def add_observability(app: web.Application, conversations: object, links: WorkerLinks) -> None:
    """`/metrics` (Prometheus: calls, stages, rings, records, redirects), `/debug/ipc` (JSON ring
    snapshot) and `/debug/memory` (heap growth, see memory_probe), both loopback only."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from ipc.stats import ring_snapshot
    from voicecall.telephony.app import PEERS
    from voicecall.telephony.ipc_metrics import RingCollector
    from voicecall.telephony.memory_probe import MemoryProbe, start_tracing_if_asked
    from voicecall.telephony.peers import RedirectCollector
    from voicecall.telephony.records_metrics import RecordsCollector
    from voicecall.twilio.security import is_loopback

    registry = conversations.metrics.registry  # type: ignore[attr-defined]
    registry.register(RingCollector(lambda: [st for link in links.links.values() for st in link.ring_stats()]))
    if conversations.deps.records is not None:  # type: ignore[attr-defined]
        registry.register(RecordsCollector(conversations.deps.records))  # type: ignore[attr-defined]
    registry.register(RedirectCollector(app[PEERS]))
    started_ns = time.monotonic_ns()
    if start_tracing_if_asked():
        log.info("tracemalloc on (VOICECALL_TRACEMALLOC): /debug/memory shows allocation sites")
    probe = MemoryProbe()

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def debug_ipc(request: web.Request) -> web.Response:
        if not is_loopback(request.remote or ""):
            raise web.HTTPForbidden(text="/debug/ipc answers loopback clients only\n")
        seen: dict[str, dict] = {}
        for link in links.links.values():
            for st in link.ring_stats():
                seen.setdefault(st.label, ring_snapshot(st))
        now = time.monotonic_ns()
        return web.json_response({"ts_ns": now, "uptime_s": (now - started_ns) / 1e9,
                                  "channels": sorted(seen.values(), key=lambda c: c["channel"])})

    async def debug_memory(request: web.Request) -> web.Response:
        if not is_loopback(request.remote or ""):
            raise web.HTTPForbidden(text="/debug/memory answers loopback clients only\n")
        if request.query.get("mark"):
            probe.mark()
        try:
            top = max(1, min(200, int(request.query.get("top", "25"))))
        except ValueError:
            raise web.HTTPBadRequest(text="top: expected a whole number\n") from None
        return web.json_response(probe.report(top, malloc_only=bool(request.query.get("malloc"))))

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/ipc", debug_ipc)
    app.router.add_get("/debug/memory", debug_memory)

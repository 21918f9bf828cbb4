"""The supervisor: starts every process, waits for readiness, watches, restarts, drains.

    run.py --config X
      └─ Supervisor.run()
           ├─ Topology: create every ring (the supervisor alone unlinks them)
           ├─ spawn telephony (binds the port at once; answers "busy" until all workers are ready)
           ├─ spawn workers: CPU workers in parallel, GPU workers one at a time
           ├─ wait for every Ready against its deadline, drawing load progress
           ├─ monitor: process sentinels (death noticed at once), health checks with timeouts,
           │           restarts with back-off, WorkerStatus to telephony
           └─ SIGTERM/SIGINT: Drain telephony (deadline), Stop workers, SIGTERM, SIGKILL, unlink

The supervisor imports no model library; its only waits are `multiprocessing.connection.wait`
on pipes and sentinels, so a child's death is noticed the moment it happens.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_any
from typing import Any

from ipc.channel import ChannelClosed
from ipc.messages import (
    Drain,
    Drained,
    Failed,
    HealthCheck,
    HealthReply,
    LoadProgress,
    Ready,
    WorkerState,
    WorkerStatus,
)
from ipc.shm import unlink_orphaned_segments
from voicecall.config import Config
from voicecall.console import StartupConsole
from voicecall.process import ChildHandle
from voicecall.topology import WORKERS, Topology
from workers.base import worker_main

log = logging.getLogger("voicecall.supervisor")


@dataclass
class Child:
    """Supervision state of one role."""

    handle: ChildHandle
    load_timeout_s: float
    gpu: bool = False
    state: WorkerState = WorkerState.STARTING
    spawned_at: float = 0.0
    ready_at: float = 0.0
    load_s: float = 0.0
    restarts: int = 0
    consecutive_crashes: int = 0
    restart_at: float = 0.0
    health_nonce: int = 0
    health_sent_at: float = 0.0
    health_pending: bool = False
    last_reason: str = ""
    detail: str = ""
    history: list[str] = field(default_factory=list)


class StartupError(Exception):
    """A child could not come up; the message names it and the cause (not recoverable)."""


class Supervisor:
    """Runs one voicecall system until a signal (or `request_stop`) ends it."""

    def __init__(
        self,
        cfg: Config,
        *,
        worker_targets: dict[str, str] | None = None,
        telephony_main: Callable[[Any], None] | None = None,
        console: StartupConsole | None = None,
    ) -> None:
        self.cfg = cfg
        self._targets = worker_targets or {}
        self._telephony_main = telephony_main
        self.console = console or StartupConsole()
        self.topology: Topology | None = None
        self.children: dict[str, Child] = {}
        self._stop_requests = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._drained = False

    # ------------------------------------------------------------------ signals

    def request_stop(self) -> None:
        """Begin draining (a second call shortens the drain). Safe from a signal handler."""
        self._stop_requests += 1
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # full (a wake-up is already pending) or already closed by stop_all
            pass

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.request_stop())

    # ------------------------------------------------------------------ start-up

    def _make_children(self) -> None:
        assert self.topology is not None
        if self._telephony_main is None:
            from voicecall.telephony.process import telephony_main

            self._telephony_main = telephony_main
        tel = ChildHandle("telephony", self._telephony_main, self.topology.telephony_spec())
        self.children["telephony"] = Child(tel, load_timeout_s=60.0)
        for name in WORKERS:
            section = getattr(self.cfg, name)
            spec = self.topology.worker_spec(name, self._targets.get(name))
            self.children[name] = Child(
                ChildHandle(name, worker_main, spec),
                load_timeout_s=section.process.load_timeout_s,
                gpu=section.process.device == "cuda",
            )

    def _spawn(self, name: str) -> None:
        child = self.children[name]
        child.handle.start()
        child.state = WorkerState.LOADING
        child.spawned_at = time.monotonic()
        child.health_pending = False
        self.console.status(name, "starting")

    def start(self) -> None:
        """Create rings, spawn everything, and block until all are ready (or raise StartupError)."""
        orphaned = unlink_orphaned_segments()
        if orphaned:
            log.warning("unlinked %d shared-memory segment(s) of a killed voicecall: %s", len(orphaned), ", ".join(orphaned))
        self.topology = Topology(self.cfg)
        self._make_children()
        self._spawn("telephony")
        gpu_queue = [n for n in WORKERS if self.children[n].gpu]
        for name in WORKERS:
            if not self.children[name].gpu:
                self._spawn(name)
        if gpu_queue:
            self._spawn(gpu_queue.pop(0))  # GPU workers measure free memory while loading: one at a time
        while any(c.state is not WorkerState.READY for c in self.children.values()):
            if self._stop_requests:
                raise StartupError("interrupted during start-up")
            self._pump(0.5, starting=True)
            now = time.monotonic()
            for name, child in self.children.items():
                if child.state is WorkerState.FAILED:
                    raise StartupError(f"{name} failed to start: {child.last_reason}")
                if child.state is WorkerState.LOADING and now - child.spawned_at > child.load_timeout_s:
                    raise StartupError(
                        f"{name} not ready after {child.load_timeout_s:.0f} s "
                        f"(still '{child.detail}'); raise {name}.process.load_timeout_s if loads are slow"
                    )
            self._respawn_due(now)  # one that died after its Ready while others still load
            if gpu_queue and all(self.children[n].state is WorkerState.READY for n in WORKERS if self.children[n].gpu
                                 and self.children[n].handle.incarnation):
                self._spawn(gpu_queue.pop(0))
        for name in WORKERS:
            self._tell_telephony(name, WorkerState.READY)
        url = f"http://{self.cfg.server.host}:{self.cfg.server.port}"
        self.console.done(
            [(n, c.state.value, c.load_s, c.detail) for n, c in self.children.items()], url
        )

    # ------------------------------------------------------------------ the one wait loop

    def _pump(self, timeout: float, starting: bool = False) -> None:
        """Wait on every child's pipe and sentinel (and the signal pipe); dispatch what happened."""
        waitables: dict[Any, tuple[str, str]] = {}
        for name, child in self.children.items():
            h = child.handle
            if h.channel is not None and child.state in (WorkerState.LOADING, WorkerState.READY):
                waitables[h.channel.conn] = (name, "msg")
            if h.sentinel is not None and child.state in (WorkerState.LOADING, WorkerState.READY):
                waitables[h.sentinel] = (name, "dead")
        ready = wait_any([*waitables, self._wake_r], timeout)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 64)
            except BlockingIOError:
                pass
        for obj in ready:
            if obj is self._wake_r:
                continue
            name, what = waitables[obj]
            if what == "msg":
                self._read_messages(name, starting)
        for obj in ready:
            if obj is not self._wake_r and waitables[obj][1] == "dead":
                self._on_death(waitables[obj][0], starting)

    def _read_messages(self, name: str, starting: bool) -> None:
        child = self.children[name]
        chan = child.handle.channel
        while chan is not None and child.state in (WorkerState.LOADING, WorkerState.READY):
            try:
                if not chan.poll(0):
                    return
                msg = chan.recv()
            except ChannelClosed:
                return  # the sentinel reports the death
            if isinstance(msg, LoadProgress):
                child.detail = msg.stage
                self.console.progress(msg)
            elif isinstance(msg, Ready):
                child.state = WorkerState.READY
                child.ready_at = time.monotonic()
                child.load_s = msg.load_s
                child.detail = msg.detail or child.detail
                self.console.status(name, f"ready ({msg.load_s:.1f} s)")
                if not starting and name != "telephony":
                    log.info("%s is serving again (incarnation %d)", name, child.handle.incarnation)
                    self._tell_telephony(name, WorkerState.READY)
                elif not starting:  # a new telephony knows nothing yet: tell it where every worker stands
                    log.info("telephony is serving again (incarnation %d)", child.handle.incarnation)
                    for worker in WORKERS:
                        ready = self.children[worker].state is WorkerState.READY
                        self._tell_telephony(worker, WorkerState.READY if ready else WorkerState.RESTARTING)
            elif isinstance(msg, Failed):
                child.last_reason = msg.reason
                log.error("%s reported failure: %s", name, msg.reason)
                if starting and not msg.recoverable:
                    child.state = WorkerState.FAILED
            elif isinstance(msg, HealthReply):
                if msg.nonce == child.health_nonce:
                    child.health_pending = False
                    if not msg.ok:
                        self._kill_hung(name, f"unhealthy: {msg.detail}")
            elif isinstance(msg, Drained):
                self._drained = True

    def _on_death(self, name: str, starting: bool) -> None:
        child = self.children[name]
        proc = child.handle.process
        assert proc is not None
        self._read_messages(name, starting)  # its last words (`Failed`) may still be in the pipe
        proc.join(0.5)
        code = proc.exitcode
        why = child.last_reason or (f"killed by signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}")
        child.handle.reap()  # also kills orphaned grandchildren (vLLM's engine process)
        if self._stop_requests and not starting:
            child.state = WorkerState.STOPPED
            return
        if starting and child.state in (WorkerState.LOADING, WorkerState.FAILED) and child.handle.incarnation == 1:
            child.state = WorkerState.FAILED
            child.last_reason = why
            return
        child.consecutive_crashes = 0 if time.monotonic() - child.ready_at > 60 else child.consecutive_crashes + 1
        backoff = min(
            self.cfg.supervisor.restart_backoff_s * (2 ** child.consecutive_crashes),
            self.cfg.supervisor.restart_backoff_max_s,
        )
        log.error("%s died (%s); restarting in %.1f s", name, why, backoff)
        child.history.append(why)
        child.state = WorkerState.RESTARTING
        child.restart_at = time.monotonic() + backoff
        child.last_reason = ""
        if name != "telephony":
            self._tell_telephony(name, WorkerState.RESTARTING, why)

    def _kill_hung(self, name: str, why: str) -> None:
        child = self.children[name]
        log.error("%s is hung (%s); killing it", name, why)
        child.last_reason = f"hung: {why}"
        child.handle.signal_group(signal.SIGKILL)  # the sentinel then reports the death

    def _tell_telephony(self, worker: str, state: WorkerState, detail: str = "") -> None:
        tel = self.children.get("telephony")
        if tel is None or tel.handle.channel is None or tel.state is not WorkerState.READY:
            return
        try:
            tel.handle.channel.send(
                WorkerStatus(worker=worker, state=state, detail=detail, restarts=self.children[worker].restarts)
            )
        except ChannelClosed:
            pass

    # ------------------------------------------------------------------ steady state

    def _respawn_due(self, now: float) -> None:
        """Start the next incarnation of every child whose restart back-off has passed."""
        for name, child in self.children.items():
            if child.state is WorkerState.RESTARTING and now >= child.restart_at:
                child.restarts += 1
                self._spawn(name)

    def _health_and_restarts(self) -> None:
        now = time.monotonic()
        sup = self.cfg.supervisor
        self._respawn_due(now)
        for name, child in self.children.items():
            if child.state is WorkerState.LOADING and now - child.spawned_at > child.load_timeout_s:
                self._kill_hung(name, f"not ready within {child.load_timeout_s:.0f} s of restart")
            elif child.state is WorkerState.READY:
                if child.health_pending and now - child.health_sent_at > sup.health_timeout_s:
                    self._kill_hung(name, f"no health reply within {sup.health_timeout_s:.1f} s "
                                          f"(supervisor.health_timeout_s)")
                    child.health_pending = False
                elif not child.health_pending and now - child.health_sent_at >= sup.health_interval_s:
                    child.health_nonce += 1
                    child.health_sent_at = now
                    child.health_pending = True
                    try:
                        child.handle.channel.send(HealthCheck(nonce=child.health_nonce, sent_ns=time.monotonic_ns()))  # type: ignore[union-attr]
                    except ChannelClosed:
                        pass

    def serve(self) -> None:
        """Monitor until a stop is requested."""
        while not self._stop_requests:
            self._pump(0.25)
            self._health_and_restarts()

    def drain_and_stop(self) -> None:
        """Drain calls (bounded), then stop every child and unlink every segment. Idempotent."""
        tel = self.children.get("telephony")
        deadline_s = self.cfg.supervisor.drain_deadline_s
        if tel is not None and tel.state is WorkerState.READY and tel.handle.channel is not None:
            if self._stop_requests > 1:  # two signals before the drain began (a burst): no grace at all
                deadline_s = 0.0
                log.warning("second signal: ending live calls now")
            else:
                log.info("draining: no new calls; live calls have %.0f s to finish (a second signal ends them now)",
                         deadline_s)
            seen = self._stop_requests
            try:
                tel.handle.channel.send(Drain(deadline_s=deadline_s))
            except ChannelClosed:
                pass
            end = time.monotonic() + deadline_s + 2.0
            while not self._drained and time.monotonic() < end and tel.handle.alive():
                if self._stop_requests > seen:
                    log.warning("second signal: ending live calls now")
                    try:
                        tel.handle.channel.send(Drain(deadline_s=0.0))
                    except ChannelClosed:
                        pass
                    seen = self._stop_requests
                    end = min(end, time.monotonic() + 2.0)
                self._pump(0.2)
        self.stop_all()

    def stop_all(self) -> None:
        # A signal that arrived during the drain escalates: children get a short grace, then SIGKILL.
        grace = self.cfg.supervisor.stop_grace_s if self._stop_requests <= 1 else min(1.0, self.cfg.supervisor.stop_grace_s)
        deadline_s = min(2.0, grace)
        for child in self.children.values():  # ask everyone first, so they wind down in parallel
            child.handle.ask_to_stop(deadline_s)
        for name, child in self.children.items():
            code = child.handle.stop(grace_s=grace, deadline_s=0.0, asked=True)
            child.state = WorkerState.STOPPED
            log.debug("%s stopped (exit %s)", name, code)
        if self.topology is not None:
            self.topology.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def run(self) -> int:
        """Start, serve until signalled, drain and stop. Returns the process exit code."""
        self._install_signals()
        try:
            self.start()
        except StartupError as exc:
            log.error("start-up failed: %s", exc)
            self.stop_all()
            _ignore_stop_signals()
            return 1
        except BaseException:
            self.stop_all()
            raise
        try:
            self.serve()
        finally:
            self.drain_and_stop()
            _ignore_stop_signals()
        log.info("stopped cleanly")
        return 0


def _ignore_stop_signals() -> None:
    """Once everything is stopped, later SIGTERM/SIGINT are moot: ignore them.

    Interpreter shutdown restores the default disposition of every signal that has a Python
    handler, so a second SIGTERM (systemd, kubectl, a twice-pressed Ctrl+C) landing in that
    window would kill an otherwise clean exit with -15. SIG_IGN survives finalisation.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)

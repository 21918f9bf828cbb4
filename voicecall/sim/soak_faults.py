"""The faults a soak injects into a running voicecall, each with how long the system took to recover.

    kill:ROLE     SIGKILL of the worker's process group -> recovered when "ROLE is serving again"
    stop:ROLE     SIGSTOP for `stop_s` (hung, not dead), then SIGCONT -> recovered when /healthz is ready
    full_ring     SIGSTOP of stt until its input ring overflows (the soak runs a small stt_in ring)
    slow_llm      the llm throttled (stopped 200 ms of every 250 ms) for `slow_s`: a slow model

Recovery is measured from the moment the fault ends (the kill, the SIGCONT) to the evidence
named above, by polling the system's log and /healthz.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from voicecall.sim.system import LocalSystem

DEFAULT_CYCLE = ("kill:stt", "stop:tts", "kill:llm", "full_ring", "kill:tts", "slow_llm", "stop:stt", "kill:telephony")


@dataclass
class FaultResult:
    at_s: float  # seconds into the soak
    fault: str
    recovery_s: float | None  # None: not recovered within the limit
    detail: str = ""
    done_s: float = 0.0  # seconds into the soak when it was over (recovered, or given up on)
    #: Callers who were waiting for an answer while the fault lasted (question pending at its start
    #: or asked before it was over), and for each how long after the fault began, or after the
    #: question if asked later, the first answer audio came (voicecall/sim/soak.py).
    waits_s: list[float] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)  # what each of those callers had asked

    def slowest(self) -> str:
        """The question of the longest wait, when it was over 1 s: where an engineer looks first."""
        if not self.waits_s or max(self.waits_s) <= 1.0:
            return ""
        return self.questions[self.waits_s.index(max(self.waits_s))]

    def as_dict(self) -> dict[str, Any]:
        return {"at_s": round(self.at_s, 1), "fault": self.fault,
                "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2), "detail": self.detail,
                "waiting_callers": len(self.waits_s),
                "heard_within_1s": sum(w <= 1.0 for w in self.waits_s),
                "longest_wait_s": round(max(self.waits_s, default=0.0), 2), "slowest_question": self.slowest()}


class FaultInjector:
    """Injects one named fault at a time into `system` and measures its recovery."""

    def __init__(self, system: LocalSystem, t0: float, stop_s: float = 3.0, slow_s: float = 6.0,
                 limit_s: float = 120.0) -> None:
        self.system = system
        self.t0 = t0
        self.stop_s = stop_s
        self.slow_s = slow_s
        self.limit_s = limit_s

    async def inject(self, fault: str) -> FaultResult:
        at = time.monotonic() - self.t0
        kind, _, role = fault.partition(":")
        try:
            if kind == "kill":
                return await self._kill(at, fault, role)
            if kind == "stop":
                return await self._stop(at, fault, role)
            if kind == "full_ring":
                return await self._full_ring(at, fault)
            if kind == "slow_llm":
                return await self._slow_llm(at, fault)
        except ProcessLookupError:
            return FaultResult(at, fault, None, "victim vanished during the fault")
        raise ValueError(f"unknown fault {fault!r} (kill:ROLE, stop:ROLE, full_ring, slow_llm)")

    def _pid(self, role: str) -> int:
        pid = self.system.pid_of(role)
        if pid is None:
            raise ProcessLookupError(role)
        return pid

    async def _kill(self, at: float, fault: str, role: str) -> FaultResult:
        back = f"{role} is serving again"
        before = self.system.log().count(back)
        os.killpg(self._pid(role), signal.SIGKILL)
        t = time.monotonic()
        ok = await self._until(lambda: self.system.log().count(back) > before)
        if ok and role == "telephony":
            ok = await self._until(self._ready)
        return FaultResult(at, fault, time.monotonic() - t if ok else None)

    async def _stop(self, at: float, fault: str, role: str) -> FaultResult:
        died = f"{role} died"
        before = self.system.log().count(died)
        pid = self._pid(role)
        os.killpg(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.stop_s)
        finally:
            _cont(pid)
        t = time.monotonic()
        ok = await self._until(self._ready)
        restarted = self.system.log().count(died) > before
        return FaultResult(at, fault, time.monotonic() - t if ok else None,
                           f"stopped {self.stop_s:.0f} s; " + ("killed as hung and restarted" if restarted else "resumed"))

    async def _full_ring(self, at: float, fault: str) -> FaultResult:
        ring0 = self._ring("stt_in")
        pid = self._pid("stt")
        os.killpg(pid, signal.SIGSTOP)
        end = time.monotonic() + 8.0  # under supervisor.health_timeout_s: a full ring, not a hung worker
        try:
            while time.monotonic() < end:
                ring = self._ring("stt_in")
                if ring and ring0 and ring["dropped"] > ring0["dropped"]:
                    break
                await asyncio.sleep(0.2)
        finally:
            _cont(pid)
        t = time.monotonic()
        ok = await self._until(lambda: (r := self._ring("stt_in")) is not None and r["occupancy"] < 0.1)
        ring1 = self._ring("stt_in") or {}
        dropped = ring1.get("dropped", 0) - (ring0 or {}).get("dropped", 0)
        return FaultResult(at, fault, time.monotonic() - t if ok else None, f"{dropped} audio records dropped while full")

    async def _slow_llm(self, at: float, fault: str) -> FaultResult:
        pid = self._pid("llm")
        end = time.monotonic() + self.slow_s
        try:
            while time.monotonic() < end:
                os.killpg(pid, signal.SIGSTOP)
                await asyncio.sleep(0.2)
                os.killpg(pid, signal.SIGCONT)
                await asyncio.sleep(0.05)
        finally:
            _cont(pid)
        t = time.monotonic()
        ok = await self._until(self._ready)
        return FaultResult(at, fault, time.monotonic() - t if ok else None, f"throttled to 20% for {self.slow_s:.0f} s")

    def _ready(self) -> bool:
        try:
            return self.system.ready()
        except RuntimeError:
            return False

    def _ring(self, channel: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.system.url}/debug/ipc", timeout=2) as resp:
                data = json.loads(resp.read())
        except (OSError, ValueError):
            return None
        return next((c for c in data.get("channels", []) if c.get("channel") == channel), None)

    async def _until(self, predicate: Any, poll_s: float = 0.1) -> bool:
        end = time.monotonic() + self.limit_s
        while time.monotonic() < end:
            if await asyncio.to_thread(predicate):
                return True
            await asyncio.sleep(poll_s)
        return False


def _cont(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass

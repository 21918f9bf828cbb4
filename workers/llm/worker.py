"""The llm worker: token streams for every call, from vLLM, an OpenAI-compatible server, or the faq.

    serve loop (on_message, never blocks)          asyncio loop thread "llm-loop" (LoopThread)
    --------------------------------------         ------------------------------------------------
    Generate -> TurnTable.open (newer turn of the   answer task: primary backend, first-token
               call supersedes the older)  ----->   deadline, fallback (TurnAnswerer) -> TurnOutput:
    Cancel / CallClosed -> cancel under the           TEXT records (seq = piece index, the first
               turn's lock, then task.cancel() -->     stamped llm_first_token), then GenerationDone
                                                      (tokens, finish reason, end_call, backend,
                                                      fallback) or GenerationFailed

Ending the call: a backend asks with the control token `llm.end_call_token` (stripped from the
spoken text), the `end_call` tool, or the knowledge file's goodbye entry; `GenerationDone.end_call`
tells telephony to hang up once the reply has been heard. Other tool calls go to telephony as
`ToolCall` and come back as `ToolResult` (tool_loop.py); the turn waits on the loop meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from ipc.messages import CallClosed, Cancel, ChatMessage, Generate, LlmRequest, ToolResult
from ipc.ring import Record
from workers.base import Outbox, Progress, Worker
from workers.config import LlmConfig
from workers.llm.answer import TurnAnswerer
from workers.llm.backend import Backend, Prompt
from workers.llm.loop import LoopThread
from workers.llm.turns import TurnOutput, TurnTable

log = logging.getLogger("voicecall.llm")


def make_backends(config: LlmConfig, progress: Progress) -> tuple[Backend, Backend | None]:
    """The primary backend and the faq backend (primary itself, the fallback, or None)."""
    faq: Backend | None = None
    if config.backend == "faq" or config.fallback == "faq":
        from workers.llm.faq import FaqBackend

        progress("loading knowledge + MiniLM", detail=config.knowledge)
        faq = FaqBackend(config)
    if config.backend == "faq":
        assert faq is not None
        return faq, faq
    if config.backend == "vllm":
        from workers.llm.vllm_engine import VllmBackend

        return VllmBackend(config), faq
    from workers.llm.openai_api import OpenAiBackend

    urls = config.base_urls or [config.base_url]
    if len(urls) == 1:
        return OpenAiBackend(config, urls[0]), faq
    from workers.llm.failover import FailoverBackend

    return FailoverBackend(config, [OpenAiBackend(config, url) for url in urls], urls), faq


class LlmWorker(Worker):
    """Serves every call from one primary backend (+ the faq fallback) on one asyncio loop."""

    config_type: ClassVar[type] = LlmConfig
    request_union: ClassVar[Any] = LlmRequest

    def __init__(self, name: str, config: LlmConfig, outbox: Outbox) -> None:
        super().__init__(name, config, outbox)
        self.config: LlmConfig = config
        self._loop: LoopThread | None = None
        self._answerer: TurnAnswerer | None = None
        self._backends: list[Backend] = []
        self._turns = TurnTable()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle

    def load(self, progress: Progress) -> None:
        primary, faq = make_backends(self.config, progress)
        self._backends = [primary] + ([faq] if faq is not None and faq is not primary else [])
        self._answerer = TurnAnswerer(self.config, primary, faq)
        self._loop = LoopThread(f"{self.name}-loop")
        self._loop.start()
        for backend in self._backends:
            progress(f"starting {backend.name} backend")
            self._loop.call(backend.start(), self.config.process.load_timeout_s, f"starting the {backend.name} backend")

    def warm_up(self) -> None:
        """One real reply from each backend (vLLM's first request pays for lazy set-up)."""
        loop = self._require_loop()
        for backend in self._backends:
            t0 = time.monotonic()
            loop.call(self._warm(backend), 120.0, f"warming up the {backend.name} backend")
            log.info("%s: %s warm-up reply in %.0f ms", self.name, backend.name, (time.monotonic() - t0) * 1e3)

    @staticmethod
    async def _warm(backend: Backend) -> None:
        prompt = Prompt(call_id=-1, turn_id=0, history=[ChatMessage(role="user", content="Hello, are you open today?")],
                        max_tokens=8, temperature=0.0)
        try:
            async for _ in backend.stream(prompt):
                pass
        except Exception as exc:  # noqa: BLE001 - a remote server may be down at start; turns fall back
            log.warning("llm: %s warm-up failed: %s", backend.name, exc)

    def shutdown(self, deadline_s: float) -> None:
        self._turns.cancel_all()
        loop = self._loop
        if loop is None:
            return
        end = time.monotonic() + deadline_s
        try:  # engine.shutdown() itself waits up to deadline_s for EngineCore, then kills it: allow for that
            loop.call(self._close_backends(deadline_s), max(0.5, deadline_s) + 1.0, "closing backends")
        except (TimeoutError, RuntimeError) as exc:
            log.warning("%s: %s (the supervisor's group kill removes what is left)", self.name, exc)
        loop.stop(max(0.5, end - time.monotonic()))

    async def _close_backends(self, deadline_s: float) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=min(1.0, deadline_s))
        for backend in self._backends:
            try:
                await backend.close(deadline_s)
            except Exception:  # noqa: BLE001 - close the others anyway
                log.exception("%s: closing the %s backend failed", self.name, backend.name)

    def busy_calls(self) -> int:
        return self._turns.busy_calls()

    def health(self) -> str | None:
        if self._loop is not None and not self._loop.alive():
            return "llm loop thread died"
        for backend in self._backends:
            problem = backend.problem()
            if problem is not None:
                return problem
        return None

    # -- requests (serve loop: never blocks)

    def on_message(self, msg: LlmRequest, record: Record) -> None:
        if isinstance(msg, Generate):
            self._generate(msg)
        elif isinstance(msg, Cancel):
            self._cancel(self._turns.cancel(msg.call_id, msg.turn_id))
        elif isinstance(msg, CallClosed):
            self._cancel(self._turns.close_call(msg.call_id))
        elif isinstance(msg, ToolResult):
            out = self._turns.active(msg.call_id, msg.turn_id)
            if out is not None:
                self._require_loop().soon(out.tool_result, msg)

    def _generate(self, msg: Generate) -> None:
        out = TurnOutput(self.outbox, msg.call_id, msg.turn_id, self.config.end_call_token)
        accepted, superseded = self._turns.open(out)
        self._cancel(superseded)
        if not accepted:
            log.debug("%s: call %d turn %d dropped (stale or cancelled)", self.name, msg.call_id, msg.turn_id)
            return
        prompt = Prompt(call_id=msg.call_id, turn_id=msg.turn_id, history=msg.messages,
                        max_tokens=max(1, min(msg.max_tokens, self.config.max_tokens)), temperature=msg.temperature,
                        tools=msg.tools, knowledge=msg.knowledge)
        self._require_loop().soon(self._start_turn, out, prompt)

    def _cancel(self, out: TurnOutput | None) -> None:
        """`out` is already cancelled (nothing more reaches the ring); stop its work on the loop."""
        if out is not None:
            self._require_loop().soon(_cancel_task, out)

    # -- on the asyncio loop

    def _start_turn(self, out: TurnOutput, prompt: Prompt) -> None:
        if out.cancelled:
            self._turns.finished(out)
            return
        assert self._answerer is not None
        task = asyncio.get_running_loop().create_task(self._answerer.answer(out, prompt),
                                                      name=f"llm-call{out.call_id}-turn{out.turn_id}")
        out.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._turn_done(out, t))

    def _turn_done(self, out: TurnOutput, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._turns.finished(out)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: call %d turn %d crashed: %r", self.name, out.call_id, out.turn_id, task.exception())
            out.failed(f"llm worker error: {task.exception()!r}", "")

    def _require_loop(self) -> LoopThread:
        if self._loop is None:
            raise RuntimeError("llm worker used before load()")
        return self._loop


def _cancel_task(out: TurnOutput) -> None:
    if out.task is not None:
        out.task.cancel()

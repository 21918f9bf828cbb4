"""Several OpenAI-compatible servers behind one backend (`llm.base_urls`): the next one when one fails.

    for each server, healthy ones first (in config order), then those that failed recently:
        stream(prompt) --first text within llm.failover_first_token_s?--> yes: this server answers the turn
              | connection error, HTTP error, stall, or no first text in time
              v
        remember it failed (it goes to the back for llm.failover_cooldown_s), try the next
    all failed -> BackendError, and the turn gets the faq fallback (workers/llm/answer.py)

Only the wait for the first text fails over: once text reached the caller the turn stays on its
server (no switching voices mid-sentence). `llm.first_token_timeout_s` still bounds the whole
turn's wait, so it should cover the servers you want tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

from workers.config import LlmConfig
from workers.llm.backend import Backend, BackendError, Piece, Prompt

log = logging.getLogger("voicecall.llm")


class ServerOrder:
    """Which server to try first: the healthy ones in config order, then the recently failed ones."""

    def __init__(self, count: int, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._failed_at = [0.0] * count  # monotonic seconds; 0 = never failed

    def order(self, now: float | None = None) -> list[int]:
        now = time.monotonic() if now is None else now
        recent = [i for i, t in enumerate(self._failed_at) if t and now - t < self.cooldown_s]
        return [i for i in range(len(self._failed_at)) if i not in recent] + sorted(recent, key=self._failed_at.__getitem__)

    def failed(self, index: int) -> None:
        self._failed_at[index] = time.monotonic()

    def answered(self, index: int) -> None:
        self._failed_at[index] = 0.0


class FailoverBackend:
    """One backend over several servers of the same kind (each its own OpenAiBackend)."""

    def __init__(self, config: LlmConfig, servers: Sequence[Backend], labels: Sequence[str]) -> None:
        self.name = servers[0].name
        self.config = config
        self.servers = list(servers)
        self.labels = list(labels)
        self.picker = ServerOrder(len(servers), config.failover_cooldown_s)
        #: Turns each server answered / failed to start (read by tests and logs).
        self.answered = [0] * len(servers)
        self.failures = [0] * len(servers)

    async def start(self) -> None:
        for server in self.servers:
            await server.start()

    async def close(self, deadline_s: float) -> None:
        for server in self.servers:
            await server.close(deadline_s)

    def problem(self) -> str | None:
        return None  # a server that is down costs a failover per turn, not the worker

    async def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        why: list[str] = []
        for index in self.picker.order():
            stream = self.servers[index].stream(prompt)
            try:
                held = await self._until_first_text(stream)
            except (BackendError, TimeoutError) as exc:
                await stream.aclose()  # type: ignore[attr-defined]
                reason = str(exc) or f"no first token within {self.config.failover_first_token_s:.1f} s (llm.failover_first_token_s)"
                self.picker.failed(index)
                self.failures[index] += 1
                why.append(f"{self.labels[index]}: {reason}")
                log.warning("call %d turn %d: LLM server %s failed (%s); trying the next", prompt.call_id,
                            prompt.turn_id, self.labels[index], reason)
                continue
            try:
                self.picker.answered(index)
                self.answered[index] += 1
                for piece in held:
                    yield piece
                async for piece in stream:
                    yield piece
                return
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        raise BackendError("every LLM server failed: " + "; ".join(why))

    async def _until_first_text(self, stream: AsyncIterator[Piece]) -> list[Piece]:
        """The pieces up to and including the first with text (or the end), within the failover deadline."""
        held: list[Piece] = []
        async with asyncio.timeout(self.config.failover_first_token_s):
            async for piece in stream:
                held.append(piece)
                if piece.text or piece.end_call or piece.finish_reason is not None:
                    return held
        return held

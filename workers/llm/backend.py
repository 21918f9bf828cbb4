"""What every reply backend (faq, vllm, openai) looks like to the LLM worker.

A backend turns one `Prompt` into an async stream of `Piece`s on the worker's asyncio loop.
Cancelling the task that iterates the stream is how a turn is aborted: each backend releases
what it holds (vLLM request, HTTP response) when its generator is closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from ipc.messages import ChatMessage, ToolCallInfo, ToolSpec


class BackendError(Exception):
    """A backend could not produce (the rest of) a reply; the turn falls back if nothing was said yet."""


@dataclass(frozen=True)
class Prompt:
    """One turn's request, as every backend sees it (the system prompt comes from config)."""

    call_id: int
    turn_id: int
    history: list[ChatMessage]
    max_tokens: int
    temperature: float
    #: Functions the model may call this turn (the backend offers them in its own format).
    tools: list[ToolSpec] = field(default_factory=list)
    #: faq: the knowledge file of the call's agent ("" = the configured one)
    knowledge: str = ""


@dataclass
class Piece:
    """A chunk of reply text and the bookkeeping that travels with it."""

    text: str = ""
    #: Tokens this piece adds (backends that cannot count report 1 per non-empty piece).
    tokens: int = 0
    #: Set on the last piece: "stop", "length", "abort", "error".
    finish_reason: str | None = None
    #: Known once the prompt is built (vllm: exact, faq: tokens of the question).
    prompt_tokens: int | None = None
    #: The exact reply total when the backend reports it (OpenAI usage chunk); overrides the sum.
    completion_tokens: int | None = None
    #: The backend asked to end the call (faq goodbye entry, a tool call).
    end_call: bool = False
    #: Complete tool calls (name, id, JSON arguments as the model wrote them: checked by the turn).
    tool_calls: list[ToolCallInfo] | None = None


class Backend(Protocol):
    """A reply generator serving every call from the worker's one asyncio loop."""

    name: str

    async def start(self) -> None:
        """Acquire loop-bound resources (engine, HTTP session); called once on the loop."""

    def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        """Stream the reply; raise BackendError when it cannot."""
        ...

    async def close(self, deadline_s: float) -> None:
        """Release everything within `deadline_s`; called once on the loop."""

    def problem(self) -> str | None:
        """None while healthy, else why the backend cannot serve any more (worker health)."""
        ...

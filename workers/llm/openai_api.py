"""The openai backend: any OpenAI-compatible `/v1/chat/completions`, streamed as server-sent events.

A remote vLLM server, a cluster of them behind a router (how voicecall scales the LLM past one
machine), or a hosted model. Cancel closes the HTTP response (the connection is dropped, not
returned to the pool): vLLM's server aborts the request when its client goes away.

Tool calls stream as `delta.tool_calls` pieces keyed by `index`: the first piece of a call
carries its `id` and `function.name`, later ones append to `function.arguments`. They are put
together here and handed on, whole, with the chunk that finishes the choice (or at `[DONE]`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ipc.messages import ToolCallInfo
from workers.config import LlmConfig
from workers.llm.backend import BackendError, Piece, Prompt
from workers.llm.prompt import chat_messages
from workers.llm.tools import offered, openai_tools


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Error(msgspec.Struct):
    message: str = ""


class ChatChunk(msgspec.Struct):
    """One `data:` event of a streamed chat completion (unknown fields ignored: servers add many)."""

    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _Error | None = None


class OpenAiBackend:
    """Streams replies from an OpenAI-compatible server over one aiohttp session."""

    name = "openai"

    def __init__(self, config: LlmConfig, base_url: str = "") -> None:
        base_url = base_url or config.base_url  # one of llm.base_urls (workers/llm/failover.py) or llm.base_url
        if not base_url:
            raise ValueError("llm.base_url: the openai backend needs a base URL (e.g. http://host:8000/v1)")
        self.config = config
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._session: Any = None
        self._decode = msgspec.json.Decoder(ChatChunk).decode
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def start(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_s,
                                        sock_read=self.config.stall_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self, deadline_s: float) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def problem(self) -> str | None:
        return None

    def _body(self, prompt: Prompt) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.api_model, "messages": chat_messages(self.config.system_prompt, prompt.history),
            "stream": True, "max_tokens": prompt.max_tokens, "temperature": prompt.temperature,
            "stream_options": {"include_usage": True},
        }
        tools = offered(prompt.tools, self.config.end_call_tool)
        if tools:
            body["tools"] = openai_tools(tools)
        return body

    async def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        import aiohttp

        if self._session is None:
            raise BackendError("openai backend used before start()")
        try:
            resp = await self._session.post(self.url, json=self._body(prompt), headers=self._headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise BackendError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        complete = False
        calls = ToolCallAssembler(f"call{prompt.call_id}-{prompt.turn_id}")
        try:
            if resp.status != 200:
                detail = (await resp.text())[:200].strip()
                raise BackendError(f"{self.url} answered HTTP {resp.status}: {detail}")
            async for raw in resp.content:
                piece = self._parse(raw, calls)
                if piece is _DONE:
                    complete = True
                    if calls.pending:  # a server that never said finish_reason
                        yield Piece(tool_calls=calls.take())
                    return
                if piece is not None:
                    yield piece
            raise BackendError(f"{self.url} closed the stream before [DONE]")
        except TimeoutError:
            raise BackendError(f"{self.url} sent nothing for {self.config.stall_timeout_s:.1f} s "
                               "(llm.stall_timeout_s)") from None
        except aiohttp.ClientError as exc:
            raise BackendError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        finally:
            if complete:
                resp.release()
            else:
                resp.close()  # drop the connection: the server stops generating

    def _parse(self, raw: bytes, calls: ToolCallAssembler) -> Piece | None:
        """One SSE line: a Piece, `_DONE` for `[DONE]`, None for lines that carry nothing."""
        line = raw.strip()
        if not line.startswith(b"data:"):
            return None  # blank separators, comments, `event:` lines
        data = line[5:].strip()
        if data == b"[DONE]":
            return _DONE
        try:
            chunk = self._decode(data)
        except msgspec.DecodeError as exc:
            raise BackendError(f"{self.url} sent a malformed chunk: {exc}: {data[:120]!r}") from None
        if chunk.error is not None:
            raise BackendError(f"{self.url} reported an error mid-stream: {chunk.error.message}")
        piece = Piece()
        for choice in chunk.choices[:1]:
            piece.text = choice.delta.content or ""
            piece.tokens = 1 if piece.text else 0
            piece.finish_reason = choice.finish_reason
            for delta in choice.delta.tool_calls or []:
                calls.add(delta)
            if choice.finish_reason is not None and calls.pending:
                piece.tool_calls = calls.take()
        if chunk.usage is not None:
            piece.prompt_tokens = chunk.usage.prompt_tokens
            piece.completion_tokens = chunk.usage.completion_tokens
        return piece


class ToolCallAssembler:
    """Puts streamed `tool_calls` deltas together into whole calls, by index."""

    def __init__(self, id_prefix: str) -> None:
        self._prefix = id_prefix
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]

    @property
    def pending(self) -> bool:
        return bool(self._calls)

    def add(self, delta: _ToolCall) -> None:
        call = self._calls.setdefault(delta.index, ["", "", ""])
        if delta.id:
            call[0] = delta.id
        if delta.function is not None:
            if delta.function.name:
                call[1] += delta.function.name
            if delta.function.arguments:
                call[2] += delta.function.arguments

    def take(self) -> list[ToolCallInfo]:
        calls, self._calls = self._calls, {}
        return [ToolCallInfo(id=cid or f"{self._prefix}-{index}", name=name, arguments_json=args or "{}")
                for index, (cid, name, args) in sorted(calls.items())]


#: The `[DONE]` sentinel of the stream (a Piece nobody else holds).
_DONE = Piece(finish_reason="done")

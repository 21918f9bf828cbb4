"""A scripted OpenAI-compatible chat server: the LLM that can pick tools, at the HTTP boundary.

No model that can choose a tool runs on this machine, so tests script the choice: a `responder`
maps each request body to a `Reply` (text pieces, tool calls, pauses), streamed in OpenAI's exact
chunk format (`chat.completion.chunk` objects as server-sent events, `tool_calls` deltas keyed
by index with the id and name first and the arguments in pieces, a finish chunk, a usage chunk
when `stream_options.include_usage`, then `data: [DONE]`). Every request body is recorded, so a
test can check which tools were offered and that results came back as `role: "tool"` messages.

    llm = OpenAiCloud(lambda body: Reply.call("transfer_call", "{}") if wants_person(body)
                                   else Reply.say("Sure, we can do that."))
    base_url = await llm.start()        # llm.base_url = base_url (ends in /v1)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from voicecall.sim.background import serve


@dataclass
class ToolCallStep:
    name: str
    arguments_json: str = "{}"
    id: str = ""
    #: Number of pieces the arguments arrive in (how real servers stream them).
    pieces: int = 3


@dataclass
class Reply:
    """What the model "says": steps are text (str), tool calls, or pauses (float seconds)."""

    steps: list[str | ToolCallStep | float] = field(default_factory=list)
    #: Send raw lines instead (malformed-chunk tests); each is sent as `data: <line>`.
    raw: list[str] = field(default_factory=list)
    status: int = 200

    @classmethod
    def say(cls, text: str, piece_words: int = 2) -> Reply:
        words = text.split(" ")
        pieces = [" ".join(words[i:i + piece_words]) for i in range(0, len(words), piece_words)]
        return cls([p if i == 0 else " " + p for i, p in enumerate(pieces)])

    @classmethod
    def call(cls, name: str, arguments_json: str = "{}", *, before: str = "") -> Reply:
        return cls([*([before] if before else []), ToolCallStep(name, arguments_json)])


def last_message(body: dict[str, Any]) -> dict[str, Any]:
    return body["messages"][-1] if body.get("messages") else {}


def tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools", [])]


class OpenAiCloud:
    """A local `/v1/chat/completions` (streaming only) answering from a responder function."""

    def __init__(self, responder: Callable[[dict[str, Any]], Reply], model: str = "scripted-model") -> None:
        self.responder = responder
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._ids = 0
        self.base_url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner, url = await serve(app, host, port)
        self.base_url = f"{url}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        reply = self.responder(body)
        if reply.status != 200:
            return web.json_response({"error": {"message": "scripted failure", "type": "server_error"}},
                                     status=reply.status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self._ids += 1
        base = {"id": f"chatcmpl-{self._ids}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.model}

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        if reply.raw:
            for line in reply.raw:
                await resp.write(f"data: {line}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            return resp
        await send({"role": "assistant", "content": ""})
        pieces, index = 0, 0
        for step in reply.steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            elif isinstance(step, str):
                await send({"content": step})
                pieces += 1
            else:
                call_id = step.id or f"call_{self._ids}_{index}"
                await send({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                            "function": {"name": step.name, "arguments": ""}}]})
                args, n = step.arguments_json, max(1, step.pieces)
                size = max(1, -(-len(args) // n))
                for i in range(0, len(args), size):
                    await send({"tool_calls": [{"index": index, "function": {"arguments": args[i:i + size]}}]})
                index += 1
                pieces += 1
        await send({}, "tool_calls" if index else "stop")
        if body.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 17, "completion_tokens": pieces, "total_tokens": 17 + pieces}
            await resp.write(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

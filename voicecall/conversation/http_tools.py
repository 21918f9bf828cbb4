"""The operator's tools over HTTP (`[[tools]]`): offered to the LLM, run from the telephony loop.

    LLM calls lookup_order({"order": "A-17"})
      -> POST {url}  Content-Type: application/json  body: {"order": "A-17"}
      <- 200 {"status": "shipped"}            -> back to the LLM as the tool result
      (timeout_s passes, non-2xx, not JSON)   -> ToolFailed: an apology is said, the call goes on

One aiohttp session for every call, owned by `Conversations` (closed with it).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from ipc.messages import ToolSpec
from voicecall.config import ToolConfig

log = logging.getLogger("voicecall.tools")

#: Largest answer passed on to the LLM, bytes (a tool result is prompt text).
MAX_ANSWER_BYTES = 16_384


class ToolFailed(Exception):
    """The tool did not give a usable answer (recoverable: an apology is said)."""


@dataclass
class ToolAnswer:
    content: str  # JSON text
    duration_ms: float


class HttpTools:
    """The configured HTTP tools by name; `call` POSTs the arguments and returns the JSON answer."""

    def __init__(self, tools: list[ToolConfig]) -> None:
        self.tools = {t.name: t for t in tools}
        self._session: aiohttp.ClientSession | None = None

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec(name=t.name, description=t.description, parameters_json=json.dumps(t.parameters))
                for t in self.tools.values()]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolAnswer:
        tool = self.tools.get(name)
        if tool is None:
            raise ToolFailed(f"no tool named {name!r}")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        t0 = time.monotonic()
        try:
            async with self._session.post(tool.url, json=arguments,
                                          timeout=aiohttp.ClientTimeout(total=tool.timeout_s)) as resp:
                status = resp.status
                body = b""
                async for chunk in resp.content.iter_chunked(8192):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        break
        except TimeoutError:
            raise ToolFailed(f"no answer within {tool.timeout_s:.1f} s (tools.{name}.timeout_s)") from None
        except aiohttp.ClientError as exc:
            raise ToolFailed(f"cannot reach the tool: {type(exc).__name__}") from None
        ms = (time.monotonic() - t0) * 1e3
        if not 200 <= status < 300:
            raise ToolFailed(f"HTTP {status}: {body[:120].decode('utf-8', 'replace')}")
        if len(body) > MAX_ANSWER_BYTES:
            raise ToolFailed(f"answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            json.loads(body)
        except ValueError:
            raise ToolFailed(f"answer is not JSON: {body[:120].decode('utf-8', 'replace')!r}") from None
        return ToolAnswer(body.decode("utf-8"), ms)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

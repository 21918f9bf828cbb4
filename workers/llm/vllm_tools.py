"""Tool calling for the in-process vLLM engine: tools into the chat template, calls out with
vLLM's own tool parsers (the ones `vllm serve --tool-call-parser NAME` uses).

    prompt:  tokenizer.apply_chat_template(messages, tools=[OpenAI tool dicts], chat_template=
             llm.chat_template or the model's own)     Gemma 3: vLLM's
             examples/tool_chat_template_gemma3_pythonic.jinja with llm.tool_parser = "pythonic"
    output:  text that starts like a tool call (llm.tool_call_prefix, "[" for pythonic) is held
             back until the reply ends, then ToolParserManager.get_tool_parser(llm.tool_parser)
             .extract_tool_calls(text) decides: calls (handed on whole) or plain text (said)

Holding back costs nothing for ordinary replies: the first characters decide, and a reply that
does not start like a call streams as before.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ipc.messages import ToolCallInfo, ToolSpec
from workers.llm.tools import openai_tools

log = logging.getLogger("voicecall.llm")


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat templates read tool-call arguments as a mapping (vLLM's server converts them too)."""
    out = []
    for msg in messages:
        if "tool_calls" in msg:
            msg = {**msg, "tool_calls": [
                {**c, "function": {"name": c["function"]["name"], "arguments": _as_dict(c["function"]["arguments"])}}
                for c in msg["tool_calls"]]}
        out.append(msg)
    return out


def _as_dict(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class ToolCallReader:
    """Decides whether a reply is a tool call and extracts the calls with vLLM's parser."""

    def __init__(self, tokenizer: Any, parser_name: str, prefix: str) -> None:
        from vllm.tool_parsers import ToolParserManager

        self._parser_cls = ToolParserManager.get_tool_parser(parser_name)  # KeyError names unknown parsers
        self._tokenizer = tokenizer
        self.prefix = prefix
        self.parser_name = parser_name

    def may_be_call(self, text: str) -> bool:
        """True while `text` (the reply so far) starts, or could still start, like a tool call."""
        head = text.lstrip()
        return head.startswith(self.prefix) or (len(head) < len(self.prefix) and self.prefix.startswith(head))

    def extract(self, text: str, tools: list[ToolSpec], id_prefix: str) -> tuple[str, list[ToolCallInfo]]:
        """(text to say, calls) from a complete reply; text that is not a call comes back as is."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        request = ChatCompletionRequest(messages=[], model="voicecall", tools=openai_tools(tools))
        parser = self._parser_cls(self._tokenizer, request.tools)
        info = parser.extract_tool_calls(text.strip(), request)
        if not info.tools_called:
            return text, []
        calls = [ToolCallInfo(id=c.id or f"{id_prefix}-{i}", name=c.function.name,
                              arguments_json=c.function.arguments or "{}")
                 for i, c in enumerate(info.tool_calls)]
        return info.content or "", calls

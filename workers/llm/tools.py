"""The functions a model is offered, and the check every call it makes goes through.

Telephony decides what a turn offers (`Generate.tools`: `transfer_call` when a transfer number
is set, the operator's HTTP tools); the worker adds `end_call` whenever tools are offered at all
(or `llm.end_call_tool` is set), because ending the call is the worker's own business. Backends
render the list in their format; whatever comes back is checked here (a known name, arguments
that are a JSON object) before anything acts on it.
"""

from __future__ import annotations

import json
from typing import Any

from ipc.messages import ToolCallInfo, ToolSpec

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
#: Names the worker always accepts, offered or not: telephony answers them (a transfer without a
#: number is refused in words), so a model or a knowledge entry asking for them is never an error.
BUILT_IN = frozenset({END_CALL, TRANSFER_CALL})

END_CALL_SPEC = ToolSpec(
    name=END_CALL,
    description="Hang up after your reply has been spoken, when the caller is done or says goodbye.",
    parameters_json='{"type": "object", "properties": {}}',
)


class ToolCallError(ValueError):
    """The model's tool call cannot be run (unknown function, arguments that are not a JSON object)."""


def offered(tools: list[ToolSpec], end_call_tool: bool) -> list[ToolSpec]:
    """The turn's tools plus `end_call` (when any tool is offered, or `llm.end_call_tool`)."""
    if (tools or end_call_tool) and all(t.name != END_CALL for t in tools):
        return [*tools, END_CALL_SPEC]
    return list(tools)


def openai_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    """OpenAI's `tools` request field (also what chat templates take as `tools=`)."""
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": json.loads(t.parameters_json)}} for t in tools]


def check_call(call: ToolCallInfo, tools: list[ToolSpec]) -> dict[str, Any]:
    """The call's arguments as a dict; raises ToolCallError naming what is wrong."""
    if call.name not in BUILT_IN and all(t.name != call.name for t in tools):
        raise ToolCallError(f"unknown tool {call.name!r} (offered: {', '.join(t.name for t in tools) or 'none'})")
    try:
        args = json.loads(call.arguments_json or "{}")
    except json.JSONDecodeError as exc:
        raise ToolCallError(f"tool {call.name!r}: arguments are not JSON ({exc}): {call.arguments_json[:120]!r}") from None
    if not isinstance(args, dict):
        raise ToolCallError(f"tool {call.name!r}: arguments must be a JSON object, got {call.arguments_json[:120]!r}")
    return args

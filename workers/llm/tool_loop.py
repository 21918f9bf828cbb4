"""A turn's tool rounds: the model calls, telephony runs the call, the result goes back in.

    round 0: backend.stream(prompt) -> text (spoken as it streams) + whole tool calls
             every call checked (tools.check_call); a bad one ends the round with a problem
             end_call: remembered (telephony hangs up once the reply is heard), never sent on
             others:   ToolCall --ring--> telephony runs it (filler, transfer, HTTP) --> ToolResult
                       `final` results end the turn (transferred, apology already spoken)
    round n: history + assistant(tool_calls, what was said) + role "tool" results -> stream again,
             at most `llm.max_tool_rounds` times
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from ipc.messages import ChatMessage, ToolCallInfo, ToolResult
from workers.llm.backend import Prompt
from workers.llm.tools import END_CALL, ToolCallError, check_call
from workers.llm.turns import TurnOutput

log = logging.getLogger("voicecall.llm")


@dataclass
class RoundOutcome:
    """What the turn does after a round's tool calls."""

    #: The turn is over (end_call, a final result, or cancelled).
    final: bool = False
    #: The prompt for the follow-up round (when not final).
    next_prompt: Prompt | None = None
    #: Why the calls could not be run (malformed, unknown tool, no result in time).
    problem: str | None = None


async def run_tool_calls(out: TurnOutput, prompt: Prompt, said: str, calls: list[ToolCallInfo],
                         result_timeout_s: float) -> RoundOutcome:
    """Check and run one round's calls; `said` is the text the model spoke before them."""
    try:
        for call in calls:
            check_call(call, prompt.tools)
    except ToolCallError as exc:
        return RoundOutcome(problem=str(exc))
    if any(c.name == END_CALL for c in calls):
        out.end_call = True
    remote = [c for c in calls if c.name != END_CALL]
    if not remote:
        return RoundOutcome(final=True)
    futures = [out.tool_call(c) for c in remote]
    if any(f is None for f in futures):
        return RoundOutcome(final=True)  # cancelled: nothing more of this turn is sent
    log.info("call %d turn %d: tool calls %s", out.call_id, out.turn_id, ", ".join(c.name for c in remote))
    try:
        async with asyncio.timeout(result_timeout_s):
            results: list[ToolResult] = list(await asyncio.gather(*futures))  # type: ignore[arg-type]
    except TimeoutError:
        for call in remote:
            out.pending_tools.pop(call.id, None)
        return RoundOutcome(problem=f"no tool result within {result_timeout_s:.0f} s (llm.tool_result_timeout_s)")
    if out.end_call or any(r.final for r in results):
        return RoundOutcome(final=True)
    history = [*prompt.history, ChatMessage(role="assistant", content=said, tool_calls=calls)]
    history += [ChatMessage(role="tool", content=r.content, tool_call_id=r.tool_call_id) for r in results]
    return RoundOutcome(next_prompt=dataclasses.replace(prompt, history=history))

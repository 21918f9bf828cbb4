"""The chat a model sees: the config's system prompt, then the call's history as heard.

The system prompt goes first and never changes, so every call shares one cached prefix. An
interrupted assistant message keeps only what the caller heard and says it was cut off (so the
model does not repeat itself or assume it finished). Consecutive messages of one role are
merged, because strict templates (Gemma's) raise on two user turns in a row. Tool use keeps
OpenAI's shape: an assistant message with `tool_calls` (arguments as JSON text), then one
`role: "tool"` message per result; those are never merged.
"""

from __future__ import annotations

from typing import Any

from ipc.messages import ChatMessage

#: Appended to an assistant message the caller cut off, so the model knows what was not heard.
INTERRUPTED_NOTE = "[interrupted by the caller]"


def chat_messages(system_prompt: str, history: list[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI-style messages: system first, roles alternating, interruptions marked.

    A system message that telephony put first in the history (the call's agent profile, with the
    operator's context for this call) replaces `system_prompt`; any other is ignored.
    """
    if history and history[0].role == "system":
        system_prompt, history = history[0].content, history[1:]
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    for msg in history:
        if msg.role == "system":
            continue  # the system prompt is the worker's, never the caller's
        content = msg.content.strip()
        if msg.role == "assistant" and msg.interrupted:
            content = f"{content} {INTERRUPTED_NOTE}".strip()
        if msg.tool_calls:
            out.append({"role": "assistant", "content": content, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json}}
                for c in msg.tool_calls]})
            continue
        if msg.role == "tool":
            out.append({"role": "tool", "tool_call_id": msg.tool_call_id, "content": content})
            continue
        if not content:
            continue
        if out and out[-1]["role"] == msg.role and "tool_calls" not in out[-1]:
            out[-1]["content"] = f"{out[-1]['content']}\n{content}"
        else:
            out.append({"role": msg.role, "content": content})
    return out


def without_system_role(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For templates with no system role: the system text leads the first user message."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    if rest and rest[0]["role"] == "user":
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def drop_oldest_exchange(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The same chat minus its oldest exchange after the system prompt; None if nothing is left to drop."""
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(head):]
    if len(body) <= 1:
        return None
    body = body[1:]
    while len(body) > 1 and body[0]["role"] != "user":  # start again on a caller message
        body = body[1:]
    return head + body


def last_caller_text(history: list[ChatMessage]) -> str:
    """What the caller said last (the faq backend answers only that)."""
    for msg in reversed(history):
        if msg.role == "user" and msg.content.strip():
            return msg.content.strip()
    return ""

"""What the agent does besides talking: tool calls, transfer, keypad digits, silence rules.

    LLM --ToolCall(transfer_call)--> handoff line said (unless the reply already said one)
                                     -> its mark echoed (the caller heard it)
                                     -> Twilio REST: Calls/{CallSid}.json Twiml=<Dial>number</Dial>
                                     -> ToolResult(final): the turn ends; Twilio ends our stream
         no number / no credentials  -> call.transfer_unavailable_message, the call goes on
         Twilio 4xx/5xx              -> call.transfer_failed_message, the call goes on
    LLM --ToolCall(operator tool)--> POST url (HttpTools); after tool_filler_after_ms the filler
                                     is said (interruptible like any speech); the JSON answer
                                     -> ToolResult -> the LLM speaks about it
         timeout / error             -> call.tool_failed_message, ToolResult(final)
    keypad digits -> one caller message (keypad.py); silence -> prompt, hang-up (silence.py)

`CallActions` is a part of `CallSession` (a mixin like `ReplyBookkeeping`): it works on the
session's live reply, and the session calls its hooks (`_on_tool_call`, `_check_heard`,
`_on_reply_heard`, `_cancel_tools`). Tool tasks are owned by the session (`_tasks`) and by
the reply (cancelled when it is interrupted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipc.messages import ToolCall, ToolCallInfo, ToolResult, ToolSpec
from voicecall.conversation.history import AgentReply
from voicecall.conversation.http_tools import ToolFailed
from voicecall.conversation.keypad import DigitCollector, keypad_message
from voicecall.conversation.silence import SilenceRules
from voicecall.twilio.rest import TwilioRestError

log = logging.getLogger("voicecall.call")

TRANSFER_CALL = "transfer_call"
TRANSFER_SPEC = ToolSpec(
    name=TRANSFER_CALL,
    description=("Transfer the caller to a member of staff (a person). Use it when the caller asks to speak "
                 "to a person, a human, the receptionist or staff, or when you cannot help them."),
    parameters_json='{"type": "object", "properties": {}}',
)


@dataclass
class ToolOutcome:
    """What a tool call gave: the result for the LLM, and what the caller hears now."""

    content: str
    ok: bool = True
    #: The turn is over (no follow-up from the LLM).
    final: bool = False
    #: Said to the caller now (an apology, a refusal), before the result goes back.
    say: str = ""


class CallActions:
    """The actions half of a `CallSession` (see the module docstring)."""

    # Provided by CallSession / ReplyBookkeeping.
    call_id: int
    deps: Any
    info: Any
    reply: AgentReply | None
    turn: int
    end_reason: str
    _tasks: set[asyncio.Task[Any]]
    _synth_pending: set[int]
    _audio_seen_for_reply: bool
    _generation_done: bool
    _aggregator: Any
    _spec: Any  # SpeculativeReplies
    _speak_piece: Callable[[str], None]
    _cancel_deadline: Callable[[], None]
    _arm_deadline: Callable[[str], None]
    _begin_reply: Callable[[int], AgentReply]
    _interrupt: Callable[[str], None]
    _emit: Callable[[str, dict[str, Any]], None]
    _row: Callable[[], int | None]
    _answer_text: Callable[[int, str], None]
    _ended: Callable[[], bool]
    _set_processing: Callable[[], None]

    def _init_actions(self) -> None:
        call = self.deps.cfg.call
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._heard_waiters: list[asyncio.Future[None]] = []
        self._farewell = ""  # said once the reply in flight is heard (max duration)
        self._keypad = DigitCollector(call.dtmf_inter_digit_s, self._on_digits)
        self._silence = SilenceRules(call, self._idle_prompt, self._idle_hangup, self._max_duration)

    def _close_actions(self) -> None:
        self._keypad.cancel()
        self._silence.close()
        self._cancel_tools()

    def _offered_tools(self) -> list[ToolSpec]:
        """The functions this call's LLM turns may call."""
        tools = [TRANSFER_SPEC] if self.info.transfer_number or self.deps.cfg.call.transfer_number else []
        if self.deps.http_tools is not None:
            tools += self.deps.http_tools.specs()
        if self.info.tools:  # the call's agent profile names the tools it may use
            tools = [t for t in tools if t.name in self.info.tools]
        return tools

    # ------------------------------------------------------------------ tool calls

    def _on_tool_call(self, reply: AgentReply, msg: ToolCall) -> None:
        """The LLM called a tool during `reply` (its text so far arrived before this)."""
        if self._spec.holds(reply):
            # Asked at the caller's pause: a tool's POST cannot be taken back if they go on, so the
            # turn is asked again, tools and all, once it has really ended.
            self._spec.discard("the model called a tool: asked again at the turn's end")
            return
        self._cancel_deadline()  # the tool's own timeouts apply while it runs
        task = asyncio.get_running_loop().create_task(self._run_tool(reply, msg), name=f"tool-{msg.name}")
        for owner in (self._tasks, self._tool_tasks):
            owner.add(task)
            task.add_done_callback(owner.discard)

    def _cancel_tools(self) -> None:
        """The reply was interrupted or the call ended: running tools stop (a REST POST in flight
        still completes inside the client, it is never re-sent)."""
        for task in list(self._tool_tasks):
            task.cancel()
        for waiter in self._heard_waiters:
            waiter.cancel()
        self._heard_waiters = []

    async def _run_tool(self, reply: AgentReply, msg: ToolCall) -> None:
        t0 = time.monotonic()
        try:
            arguments = json.loads(msg.arguments_json or "{}")
        except ValueError:
            arguments = None  # the worker checks calls; this is a second line of defence
        if not isinstance(arguments, dict):
            outcome = ToolOutcome(json.dumps({"error": "arguments are not a JSON object"}), ok=False, final=True,
                                  say=self.deps.cfg.call.tool_failed_message)
        elif msg.name == TRANSFER_CALL:
            outcome = await self._transfer(reply)
        else:
            outcome = await self._http_tool(reply, msg.name, arguments)
        if reply is not self.reply or reply.interrupted:
            return
        if outcome.say:
            self._say_in_reply(outcome.say)
        self.deps.links["llm"].send(
            ToolResult(call_id=self.call_id, turn_id=reply.turn_id, tool_call_id=msg.tool_call_id,
                       content=outcome.content, ok=outcome.ok, final=outcome.final),
            self.call_id, reply.turn_id,
        )
        ms = (time.monotonic() - t0) * 1e3
        reply.tool_steps.append((ToolCallInfo(id=msg.tool_call_id, name=msg.name, arguments_json=msg.arguments_json),
                                 outcome.content))
        if self.deps.records is not None:
            self.deps.records.tool_call(self._row, reply.turn_id, msg.name, msg.arguments_json, outcome.content,
                                        ok=outcome.ok, duration_ms=ms)
        self._emit("tool", {"turn": reply.turn_id, "name": msg.name, "arguments": msg.arguments_json,
                            "result": outcome.content, "ok": outcome.ok, "ms": round(ms)})
        log.info("call %d turn %d: tool %s -> %s in %.0f ms", self.call_id, reply.turn_id, msg.name,
                 "ok" if outcome.ok else "failed", ms)
        if not outcome.final and not self._audio_seen_for_reply:
            self._arm_deadline("reply after tool")

    async def _transfer(self, reply: AgentReply) -> ToolOutcome:
        call = self.deps.cfg.call
        number, rest = self.info.transfer_number or call.transfer_number, self.deps.rest  # the agent's own first
        why = ("no transfer number is set (call.transfer_number)" if not number
               else "no Twilio credentials" if rest is None or not rest.configured
               else "no CallSid for this call" if not self.info.call_sid else "")
        if why:
            log.warning("call %d: transfer asked for but not possible: %s", self.call_id, why)
            return ToolOutcome(json.dumps({"transferred": False, "reason": why}), ok=False, final=True,
                               say=call.transfer_unavailable_message)
        self._flush_text()
        if not reply.sentences:
            self._say_in_reply(call.transfer_message)
        if not await self._until_heard(call.transfer_heard_timeout_s):
            log.warning("call %d: handoff line not heard within %.0f s (call.transfer_heard_timeout_s); "
                        "transferring anyway", self.call_id, call.transfer_heard_timeout_s)
        reply.acting = True
        try:
            await rest.transfer(self.info.call_sid, number)
        except TwilioRestError as exc:
            log.warning("call %d: transfer to %s failed: %s", self.call_id, number, exc)
            if self.deps.records is not None:
                self.deps.records.event(self._row, "transfer_failed", f"HTTP {exc.status} code {exc.code}")
            return ToolOutcome(json.dumps({"transferred": False, "error": exc.message, "code": exc.code}),
                               ok=False, final=True, say=call.transfer_failed_message)
        self.end_reason = f"transferred to {number}"
        if self.deps.records is not None:
            self.deps.records.event(self._row, "transfer", number)
        return ToolOutcome(json.dumps({"transferred": True, "to": number}), final=True)

    async def _http_tool(self, reply: AgentReply, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        call = self.deps.cfg.call
        tools = self.deps.http_tools
        filler: asyncio.TimerHandle | None = None
        if call.tool_filler and call.tool_filler_after_ms > 0:
            filler = asyncio.get_running_loop().call_later(call.tool_filler_after_ms / 1e3, self._say_filler, reply)
        try:
            if tools is None:
                raise ToolFailed(f"no tool named {name!r}")
            reply.acting = True
            answer = await tools.call(name, arguments)
        except ToolFailed as exc:
            log.warning("call %d: tool %s failed: %s", self.call_id, name, exc)
            return ToolOutcome(json.dumps({"error": str(exc)}), ok=False, final=True, say=call.tool_failed_message)
        finally:
            if filler is not None:
                filler.cancel()
        return ToolOutcome(answer.content)

    def _say_filler(self, reply: AgentReply) -> None:
        if reply is self.reply and not reply.interrupted:
            self._say_in_reply(self.deps.cfg.call.tool_filler)

    # ------------------------------------------------------------------ speaking outside the LLM

    def _flush_text(self) -> None:
        """Speak the LLM text still held by the sentence aggregator (it came before the tool call)."""
        for piece in self._aggregator.flush():
            self._speak_piece(piece)

    def _say_in_reply(self, text: str) -> None:
        """Say `text` as part of the reply in flight, after what the LLM already said (and record it
        with the reply's text, so the record reads as the caller heard it)."""
        self._flush_text()
        self._speak_piece(text)
        if self.reply is not None:
            self.reply.generated = f"{self.reply.generated.rstrip()} {text} ".lstrip()

    def _say_line(self, text: str, end_call: bool = False) -> None:
        """Say `text` as an agent turn of its own (idle prompt, goodbye); `end_call` hangs up after."""
        if self._ended():
            return
        if self.reply is not None:
            self._interrupt("agent line")
        turn = self.turn
        self.turn += 1  # a turn of its own, like keypad input: nothing stale can match it
        reply = self._begin_reply(turn)
        self._set_processing()
        reply.end_call = end_call
        reply.generated = text
        self._speak_piece(text)
        self._generation_done = True

    def _reply_heard(self) -> bool:
        reply = self.reply
        return (reply is not None and not self._synth_pending
                and all(s.mark and s.played for s in reply.sentences))

    def _check_heard(self) -> None:
        """A mark was echoed: wake whoever waits for the reply so far to be heard."""
        if self._heard_waiters and self._reply_heard():
            for waiter in self._heard_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._heard_waiters = []

    async def _until_heard(self, timeout_s: float) -> bool:
        """True once everything said so far in the reply has been heard; False on timeout."""
        if self._reply_heard():
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._heard_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout_s)
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------------------------ keypad and silence

    def _on_keypad(self, digit: str) -> None:
        self._silence.caller_active()
        self._keypad.push(digit)

    def _on_digits(self, digits: str) -> None:
        if self._ended():
            return
        turn = self.turn
        self.turn += 1
        self._answer_text(turn, keypad_message(digits))

    def _on_reply_heard(self) -> None:
        """A reply finished and was heard (not the last one): farewell due, or the idle clock starts."""
        if self._farewell:
            text, self._farewell = self._farewell, ""
            self._say_line(text, end_call=True)
            return
        self._silence.listening()

    def _idle_prompt(self) -> None:
        if self.reply is None and not self._ended():
            log.info("call %d: caller silent for %.0f s; prompting", self.call_id, self.deps.cfg.call.idle_prompt_s)
            self._say_line(self.deps.cfg.call.idle_prompt)

    def _idle_hangup(self) -> None:
        log.info("call %d: caller silent for %.0f s; ending the call", self.call_id, self.deps.cfg.call.idle_hangup_s)
        self.end_reason = "caller silent"
        self._say_line(self.deps.cfg.call.idle_goodbye, end_call=True)

    def _max_duration(self) -> None:
        log.info("call %d: call.max_duration_s (%.0f s) reached", self.call_id, self.deps.cfg.call.max_duration_s)
        self.end_reason = "max duration"
        if self.reply is None:
            self._say_line(self.deps.cfg.call.max_duration_message, end_call=True)
        else:
            self._farewell = self.deps.cfg.call.max_duration_message  # after the reply in flight

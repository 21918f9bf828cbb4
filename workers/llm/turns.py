"""Per-turn output and the table of turns in flight, shared by the serve loop and the asyncio loop.

    serve loop (on_message)               asyncio loop (backends)
    -----------------------               -------------------------------------------
    Generate -> TurnTable.open   ------>  answer task streams pieces -> TurnOutput.say
    Cancel   -> TurnTable.cancel          (each write: under the turn's lock, only if not cancelled)
                 sets cancelled under the turn's lock, then the task is cancelled on the loop

Because the cancel flag is set under the same lock every write takes, nothing of a turn can
reach the ring once the serve loop has handled its `Cancel` (or a newer turn, or `CallClosed`).
"""

from __future__ import annotations

import asyncio
import threading
import time

from ipc.messages import GenerationDone, GenerationFailed, ToolCall, ToolCallInfo, ToolResult
from workers.base import Outbox
from workers.llm.end_call import EndCallFilter


class TurnOutput:
    """Everything one turn sends: TEXT records (seq = piece index), then Done or Failed."""

    def __init__(self, outbox: Outbox, call_id: int, turn_id: int, end_call_token: str) -> None:
        self.call_id = call_id
        self.turn_id = turn_id
        self.received_ns = time.monotonic_ns()
        self.lock = threading.Lock()
        self.cancelled = False
        self.task: asyncio.Task[None] | None = None
        self.seq = 0
        self.first_token_ns = 0
        self.completion_tokens = 0
        self.prompt_tokens = 0
        self.end_call = False
        #: Tool calls sent to telephony and not answered yet (futures live on the asyncio loop).
        self.pending_tools: dict[str, asyncio.Future[ToolResult]] = {}
        self._outbox = outbox
        self._filter = EndCallFilter(end_call_token)

    @property
    def spoken(self) -> bool:
        """Some text of this turn is already on its way to the caller (no fallback any more)."""
        return self.seq > 0

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True

    def say(self, delta: str) -> bool:
        """Send speakable text (control token removed); False once the turn is cancelled."""
        return self._write(self._filter.push(delta))

    def done(self, finish_reason: str, backend: str, fallback: bool) -> None:
        """Flush held-back text, then the closing `GenerationDone` (unless cancelled)."""
        self._write(self._filter.flush())
        with self.lock:
            if self.cancelled:
                return
            self._outbox.message(
                GenerationDone(
                    call_id=self.call_id, turn_id=self.turn_id, finish_reason=finish_reason,
                    prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                    end_call=self.end_call or self._filter.seen, backend=backend, fallback=fallback,
                    first_token_ns=self.first_token_ns, done_ns=time.monotonic_ns(),
                ),
                self.call_id, self.turn_id, self.seq,
            )

    def tool_call(self, call: ToolCallInfo) -> asyncio.Future[ToolResult] | None:
        """Ask telephony to run `call` (on the asyncio loop); None once the turn is cancelled."""
        future: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
        with self.lock:
            if self.cancelled:
                return None
            self.pending_tools[call.id] = future
            self._outbox.message(ToolCall(call_id=self.call_id, turn_id=self.turn_id, tool_call_id=call.id,
                                          name=call.name, arguments_json=call.arguments_json),
                                 self.call_id, self.turn_id, self.seq)
        return future

    def tool_result(self, result: ToolResult) -> None:
        """Telephony's answer to one of this turn's tool calls (on the asyncio loop)."""
        future = self.pending_tools.pop(result.tool_call_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    def failed(self, reason: str, backend: str) -> None:
        with self.lock:
            if self.cancelled:
                return
            self._outbox.message(
                GenerationFailed(call_id=self.call_id, turn_id=self.turn_id, reason=reason, backend=backend),
                self.call_id, self.turn_id, self.seq,
            )

    def _write(self, text: str) -> bool:
        with self.lock:
            if self.cancelled:
                return False
            if not text:
                return True
            ts_ns: int | None = None
            if self.seq == 0:
                self.first_token_ns = ts_ns = time.monotonic_ns()  # llm_first_token
            self._outbox.text(text, self.call_id, self.turn_id, self.seq, ts_ns)
            self.seq += 1
            return True


class TurnTable:
    """The newest turn of every call and the one turn per call in flight (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: dict[int, int] = {}
        self._active: dict[int, TurnOutput] = {}

    def open(self, out: TurnOutput) -> tuple[bool, TurnOutput | None]:
        """Admit a new turn: (accepted, the older turn it supersedes, already cancelled)."""
        with self._lock:
            if out.turn_id <= self._newest.get(out.call_id, -1):
                return False, None  # stale, a repeat, or already cancelled
            self._newest[out.call_id] = out.turn_id
            old = self._active.pop(out.call_id, None)
            self._active[out.call_id] = out
        if old is not None:
            old.cancel()
        return True, old

    def cancel(self, call_id: int, turn_id: int) -> TurnOutput | None:
        """Cancel the call's turn if it is `turn_id` or older; later Generates up to it are dropped."""
        with self._lock:
            self._newest[call_id] = max(self._newest.get(call_id, -1), turn_id)
            out = self._active.get(call_id)
            if out is None or out.turn_id > turn_id:
                return None
            del self._active[call_id]
        out.cancel()
        return out

    def close_call(self, call_id: int) -> TurnOutput | None:
        """Forget the call; its turn in flight (returned) is cancelled."""
        with self._lock:
            self._newest.pop(call_id, None)
            out = self._active.pop(call_id, None)
        if out is not None:
            out.cancel()
        return out

    def active(self, call_id: int, turn_id: int) -> TurnOutput | None:
        """The call's turn in flight if it is `turn_id`."""
        with self._lock:
            out = self._active.get(call_id)
        return out if out is not None and out.turn_id == turn_id else None

    def finished(self, out: TurnOutput) -> None:
        with self._lock:
            if self._active.get(out.call_id) is out:
                del self._active[out.call_id]

    def cancel_all(self) -> list[TurnOutput]:
        with self._lock:
            outs = list(self._active.values())
            self._active.clear()
        for out in outs:
            out.cancel()
        return outs

    def busy_calls(self) -> int:
        with self._lock:
            return len(self._active)

"""One turn, start to finish: the primary backend, and the fallback when it cannot answer in time.

    primary.stream(prompt) --first text within first_token_timeout_s?--> stream to the caller
          | fails, stalls, or says nothing before its first text
          v
    fallback (llm.fallback): "faq" -> the knowledge file's answer, "apology" -> llm.apology,
    "none" -> GenerationFailed (telephony speaks its canned apology)

A tool call counts as the model answering (the first-token deadline is lifted); a malformed or
unknown call before anything was said falls back like a failure, with a log line
(tool_loop.py runs the rounds).

Once text has reached the caller there is no switching voices mid-sentence: a primary that
fails after its first text ends the turn with `finish_reason="error"` and what was said stands.
"""

from __future__ import annotations

import asyncio
import logging

from ipc.messages import ToolCallInfo
from workers.config import LlmConfig
from workers.llm.backend import Backend, BackendError, Piece, Prompt
from workers.llm.tool_loop import run_tool_calls
from workers.llm.turns import TurnOutput

log = logging.getLogger("voicecall.llm")


class TurnAnswerer:
    """Runs turns on the worker's asyncio loop with a primary backend and an optional faq fallback."""

    def __init__(self, config: LlmConfig, primary: Backend, faq: Backend | None) -> None:
        self.config = config
        self.primary = primary
        self.faq = faq

    async def answer(self, out: TurnOutput, prompt: Prompt) -> None:
        why = await self._try(self.primary, out, prompt, self.config.first_token_timeout_s)
        if why is None:
            return
        log.warning("call %d turn %d: %s backend could not answer (%s); falling back to %s",
                    out.call_id, out.turn_id, self.primary.name, why, self.config.fallback)
        if self.config.fallback == "faq" and self.faq is not None and self.faq is not self.primary:
            if await self._try(self.faq, out, prompt, None, fallback=True) is None:
                return
        if self.config.fallback == "none":
            out.failed(f"{self.primary.name}: {why}", self.primary.name)
            return
        out.say(self.config.apology)
        out.done("stop", "apology", fallback=True)

    async def _try(self, backend: Backend, out: TurnOutput, prompt: Prompt, first_timeout_s: float | None,
                   fallback: bool = False) -> str | None:
        """Stream `backend` into `out`, tool rounds included; None when the turn was answered, else why not."""
        finish = "stop"
        for round_no in range(self.config.max_tool_rounds + 1):
            result = await self._round(backend, out, prompt, first_timeout_s if round_no == 0 else None)
            if result is None:
                return None  # cancelled: say nothing more, not even Done
            if isinstance(result, str):
                return result
            finish, said, calls = result
            if not calls or finish in ("error", "abort"):
                break
            outcome = await run_tool_calls(out, prompt, said, calls, self.config.tool_result_timeout_s)
            if outcome.problem is not None:
                log.warning("call %d turn %d: %s tool call not run: %s", out.call_id, out.turn_id, backend.name,
                            outcome.problem)
                if not out.spoken and not out.end_call:
                    return outcome.problem
                finish = "error"
                break
            if outcome.final or outcome.next_prompt is None:
                finish = "tool_calls"
                break
            prompt = outcome.next_prompt
        else:
            log.warning("call %d turn %d: still calling tools after %d rounds (llm.max_tool_rounds)",
                        out.call_id, out.turn_id, self.config.max_tool_rounds)
        if not out.spoken and not out.end_call and finish not in ("abort", "tool_calls"):
            return f"empty reply (finish_reason={finish})"
        out.done(finish, backend.name, fallback)
        return None

    async def _round(self, backend: Backend, out: TurnOutput, prompt: Prompt,
                     first_timeout_s: float | None) -> tuple[str, str, list[ToolCallInfo]] | str | None:
        """One stream: (finish reason, text said, tool calls), a reason it failed, or None if cancelled."""
        stream = backend.stream(prompt)
        finish, said, calls = "stop", "", []
        try:
            # One task throughout (no wait_for side task): the deadline is lifted at the first text.
            async with asyncio.timeout(first_timeout_s) as budget:
                async for piece in stream:
                    self._account(out, piece)
                    if piece.text:
                        if not out.say(piece.text):
                            return None
                        said += piece.text
                    calls += piece.tool_calls or []
                    if out.spoken or calls:
                        budget.reschedule(None)
                    if piece.finish_reason is not None:
                        finish = piece.finish_reason
        except TimeoutError:
            return f"no first token within {first_timeout_s:.1f} s (llm.first_token_timeout_s)"
        except BackendError as exc:
            if not out.spoken:
                return str(exc)
            log.warning("call %d turn %d: %s failed mid-reply: %s", out.call_id, out.turn_id, backend.name, exc)
            finish = "error"
        except Exception as exc:  # noqa: BLE001 - a backend bug must cost one turn, not the worker
            log.exception("call %d turn %d: %s backend crashed", out.call_id, out.turn_id, backend.name)
            if not out.spoken:
                return f"{type(exc).__name__}: {exc}"
            finish = "error"
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        return finish, said, calls

    @staticmethod
    def _account(out: TurnOutput, piece: Piece) -> None:
        out.completion_tokens += piece.tokens
        if piece.completion_tokens is not None:
            out.completion_tokens = piece.completion_tokens
        if piece.prompt_tokens is not None:
            out.prompt_tokens = piece.prompt_tokens
        out.end_call = out.end_call or piece.end_call


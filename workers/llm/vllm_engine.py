"""The vllm backend: vLLM's in-process async engine (`AsyncLLM`), the production default on a GPU.

    LLM worker process (this code, asyncio loop)        EngineCore process (spawned by vLLM)
    prompt -> chat template -> token ids  ---ZMQ--->   scheduler + model (prefix cache, KV pool)
    DELTA RequestOutputs <------------------------     one request id per turn; abort on cancel

vLLM starts EngineCore as a child of this worker, inside the worker's process group: a clean
stop calls `engine.shutdown()`; SIGTERM reaches EngineCore through the group signal; a worker
killed outright is cleaned up by the supervisor's killpg of the group. Nothing of vLLM is
imported outside `start()`.

Prompts: the tokenizer's own chat template renders the system prompt and history (a template
without a system role, such as Gemma's, gets the system text in front of the first user turn),
then token ids go to the engine, so no second BOS is added. The system prompt is first and
byte-identical across calls, so prefix caching serves it from the cache. History that would
not fit `max_model_len` with the reply is dropped oldest first.

Tools: the turn's tools go into the template (`tools=`), and a reply that starts like a tool
call is held back and read with vLLM's own tool parser (vllm_tools.py).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

from workers.config import LlmConfig
from workers.llm.backend import BackendError, Piece, Prompt
from workers.llm.prompt import chat_messages, drop_oldest_exchange, without_system_role
from workers.llm.tools import offered, openai_tools
from workers.llm.vllm_tools import ToolCallReader, template_messages

log = logging.getLogger("voicecall.llm")


class VllmBackend:
    """One AsyncLLM engine serving every call (continuous batching across calls)."""

    name = "vllm"

    def __init__(self, config: LlmConfig) -> None:
        if not config.model:
            raise ValueError("llm.model: the vllm backend needs a model directory or hub id")
        self.config = config
        self._engine: Any = None
        self._tokenizer: Any = None
        self._params: Any = None
        self._system_role = True
        self._ids = itertools.count()
        self._template: str | None = None
        self._calls: ToolCallReader | None = None

    async def start(self) -> None:
        """Build the engine (EngineCore starts here: seconds on CPU, minutes for a 27B model)."""
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        c = self.config
        args = AsyncEngineArgs(
            model=c.model, dtype=c.dtype, quantization=c.quantization or None, max_model_len=c.max_model_len,
            max_num_seqs=c.max_num_seqs, enable_prefix_caching=True, enforce_eager=c.enforce_eager,
            kv_cache_memory_bytes=c.kv_cache_bytes or None, gpu_memory_utilization=c.gpu_memory_utilization,
            kv_cache_dtype=c.kv_cache_dtype, language_model_only=c.language_model_only, disable_log_stats=True,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self.use_tokenizer(self._engine.get_tokenizer())
        log.info("vllm: engine up for %s (max_model_len %d, system role in template: %s)",
                 c.model, c.max_model_len, self._system_role)

    def use_tokenizer(self, tokenizer: Any) -> None:
        """Adopt the engine's tokenizer: template (llm.chat_template if set), system role, tool parser."""
        from pathlib import Path

        self._tokenizer = tokenizer
        if self.config.chat_template:
            self._template = Path(self.config.chat_template).read_text()
        self._system_role = self._template_has_system_role()
        self._calls = ToolCallReader(tokenizer, self.config.tool_parser, self.config.tool_call_prefix)

    def _template_has_system_role(self) -> bool:
        """Whether the template renders a system message itself (Gemma's has no system role)."""
        probe = [{"role": "system", "content": "SYSTEM-PROBE"}, {"role": "user", "content": "hi"}]
        try:
            return "SYSTEM-PROBE" in self._render(probe)
        except Exception:  # noqa: BLE001 - jinja raises whatever the template author chose
            return False

    def _render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        return self._tokenizer.apply_chat_template(template_messages(messages), tools=tools or None,
                                                   chat_template=self._template, tokenize=False,
                                                   add_generation_prompt=True)

    def prompt_text(self, prompt: Prompt) -> str:
        """The templated chat as text (what `prompt_ids` encodes)."""
        return self._tokenizer.decode(self.prompt_ids(prompt))

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of the templated chat, oldest history dropped until the reply fits."""
        messages: list[dict[str, Any]] | None = chat_messages(self.config.system_prompt, prompt.history)
        tools = openai_tools(offered(prompt.tools, self.config.end_call_tool))
        while messages is not None:
            shaped = messages if self._system_role else without_system_role(messages)
            ids = self._tokenizer.encode(self._render(shaped, tools), add_special_tokens=False)
            if len(ids) + min(prompt.max_tokens, 16) <= self.config.max_model_len:
                return ids
            messages = drop_oldest_exchange(messages)
        raise BackendError(f"the prompt does not fit llm.max_model_len={self.config.max_model_len} "
                           "even with only the last caller message")

    async def close(self, deadline_s: float) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.shutdown(timeout=min(deadline_s, self.config.shutdown_timeout_s))

    def problem(self) -> str | None:
        engine = self._engine
        if engine is not None and engine.errored:
            return f"vLLM engine is dead: {engine.dead_error}"
        return None

    async def stream(self, prompt: Prompt) -> AsyncIterator[Piece]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        if self._engine is None:
            raise BackendError("vllm backend used before start() or after close()")
        ids = self.prompt_ids(prompt)
        max_tokens = max(1, min(prompt.max_tokens, self.config.max_model_len - len(ids)))
        params = SamplingParams(max_tokens=max_tokens, temperature=prompt.temperature,
                                output_kind=RequestOutputKind.DELTA)
        request_id = f"call{prompt.call_id}-turn{prompt.turn_id}-{next(self._ids)}"  # never reused
        first = True
        tools = offered(prompt.tools, self.config.end_call_tool)
        held: list[Piece] = []  # pieces of a reply that may be a tool call (tools offered only)
        text, released = "", False
        # Cancelling the consuming task (barge-in) closes generate(), which aborts the request in
        # vLLM itself and frees its KV blocks; a second, explicit abort is not needed.
        try:
            async for out in self._engine.generate({"prompt_token_ids": ids}, params, request_id):
                completion = out.outputs[0]
                piece = Piece(text=completion.text, tokens=len(completion.token_ids),
                              finish_reason=(completion.finish_reason or "stop") if out.finished else None,
                              prompt_tokens=len(ids) if first else None)
                first = False
                text += piece.text
                if tools and self._calls is not None and not released and self._calls.may_be_call(text):
                    held.append(piece)
                    if piece.finish_reason is not None:
                        yield self._read_calls(held, text, tools, request_id)
                    continue
                released = True
                for earlier in held:  # it did not become a call after all
                    yield earlier
                held = []
                yield piece
        except EngineDeadError as exc:
            raise BackendError(f"vLLM engine died: {exc}") from None
        except EngineGenerateError as exc:
            raise BackendError(f"vLLM could not generate: {exc}") from None

    def _read_calls(self, held: list[Piece], text: str, tools: list[Any], request_id: str) -> Piece:
        """The held reply as one piece: its tool calls (and any text the parser left), or the text."""
        assert self._calls is not None
        said, calls = self._calls.extract(text, tools, request_id)
        log.info("vllm: %s reply read by the %s parser: %d tool call(s)", request_id, self._calls.parser_name,
                 len(calls))
        return Piece(text=said, tokens=sum(p.tokens for p in held), finish_reason=held[-1].finish_reason,
                     prompt_tokens=held[0].prompt_tokens, tool_calls=calls or None)

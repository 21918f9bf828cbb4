"""Tool calling in the llm worker process: the openai backend against the scripted OpenAI server.

The server streams tool calls in OpenAI's chunk format (the only "model" here that can choose a
tool); the worker is real (spawned, rings). The fallback is the configured apology (the faq
fallback's transfer entry is tested in test_llm_faq.py and end to end). The test plays
telephony: it answers `ToolCall`s with `ToolResult`s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ipc.messages import (
    KIND_TEXT,
    ChatMessage,
    Generate,
    GenerationDone,
    GenerationFailed,
    LlmEvent,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from ipc.ring import Record
from voicecall.sim.background import BackgroundLoop
from voicecall.sim.openai_cloud import OpenAiCloud, Reply, ToolCallStep, last_message
from voicecall.sim.worker_harness import WorkerHarness
from workers.config import LlmConfig

TARGET = "workers.llm.worker:LlmWorker"
LOOKUP = ToolSpec(name="lookup_order", description="Find an order by its number.",
                  parameters_json=json.dumps({"type": "object", "properties": {"order": {"type": "string"}},
                                              "required": ["order"]}))
APOLOGY = "Sorry, I could not do that. What else can I help with?"


def respond(body: dict[str, Any]) -> Reply:
    last = last_message(body)
    if last.get("role") == "tool":
        return Reply.say(f"Your order is {json.loads(last['content'])['status']}.")
    question = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    scripted = {
        "lookup": Reply.call("lookup_order", '{"order": "A-17"}', before="Let me check that. "),
        "bye": Reply(["Goodbye, take care!", ToolCallStep("end_call")]),
        "badjson": Reply.call("lookup_order", '{"order": "A-1'),
        "unknown": Reply.call("launch_rockets", "{}"),
        "transfer": Reply.call("transfer_call", "{}"),
    }
    return scripted.get(question.split(":")[-1].split()[0], Reply.say("I am not sure."))


@pytest.fixture(scope="module")
def cloud() -> Iterator[OpenAiCloud]:
    with BackgroundLoop() as bg:
        server = OpenAiCloud(respond)
        bg.run(server.start())
        yield server
        bg.run(server.stop())


@pytest.fixture(scope="module")
def llm(cloud: OpenAiCloud) -> Iterator[WorkerHarness]:
    config = LlmConfig(backend="openai", base_url=cloud.base_url, api_model="test", first_token_timeout_s=2.0,
                       connect_timeout_s=1.0, stall_timeout_s=5.0, tool_result_timeout_s=5.0, fallback="apology",
                       apology=APOLOGY)
    with WorkerHarness("llm", TARGET, config, LlmEvent) as h:
        h.start(120)
        yield h


def ask(h: WorkerHarness, call: int, turn: int, question: str) -> None:
    h.send(Generate(call_id=call, turn_id=turn, messages=[ChatMessage(role="user", content=question)],
                    max_tokens=100, temperature=0.0, sent_ns=time.monotonic_ns(), tools=[LOOKUP]), call, turn)


def until_message(kind: type, call: int, turn: int) -> Any:
    return lambda rec, msg: isinstance(msg, kind) and msg.call_id == call and msg.turn_id == turn


def spoken(got: list[tuple[Record, Any]]) -> str:
    return "".join(r.payload.decode() for r, _ in got if r.kind == KIND_TEXT)


def test_tool_call_runs_in_telephony_and_the_follow_up_is_spoken(llm: WorkerHarness, cloud: OpenAiCloud) -> None:
    before = len(cloud.requests)
    ask(llm, 1, 1, "tool:lookup where is my order")
    got = llm.collect(until_message(ToolCall, 1, 1), 15)
    call = got[-1][1]
    assert isinstance(call, ToolCall) and call.name == "lookup_order"
    assert json.loads(call.arguments_json) == {"order": "A-17"}  # put together from streamed pieces
    assert spoken(got) == "Let me check that. "  # said before the call, and before the ToolCall on the ring
    offered = [t["function"]["name"] for t in cloud.requests[before]["tools"]]
    assert offered == ["lookup_order", "end_call"]
    assert cloud.requests[before]["tools"][0]["function"]["parameters"]["required"] == ["order"]

    llm.send(ToolResult(call_id=1, turn_id=1, tool_call_id=call.tool_call_id, content='{"status": "on its way"}'), 1, 1)
    got = llm.collect(until_message(GenerationDone, 1, 1), 15)
    assert spoken(got) == "Your order is on its way."
    done = got[-1][1]
    assert done.finish_reason == "stop" and not done.fallback and done.backend == "openai"
    follow_up = cloud.requests[before + 1]["messages"]
    assistant, tool = follow_up[-2], follow_up[-1]
    assert assistant["role"] == "assistant" and assistant["content"] == "Let me check that."
    assert assistant["tool_calls"][0]["id"] == call.tool_call_id
    assert assistant["tool_calls"][0]["function"] == {"name": "lookup_order", "arguments": '{"order": "A-17"}'}
    assert tool == {"role": "tool", "tool_call_id": call.tool_call_id, "content": '{"status": "on its way"}'}


def test_end_call_tool_ends_the_call_without_a_round_trip(llm: WorkerHarness) -> None:
    ask(llm, 2, 1, "tool:bye")
    got = llm.collect(until_message(GenerationDone, 2, 1), 15)
    assert spoken(got) == "Goodbye, take care!"
    assert got[-1][1].end_call and not any(isinstance(m, ToolCall) for _, m in got)


@pytest.mark.parametrize("bad", ["badjson", "unknown"])
def test_a_malformed_or_unknown_tool_call_gets_the_fallback_answer(llm: WorkerHarness, bad: str) -> None:
    ask(llm, 3, 1 if bad == "badjson" else 2, f"Can I talk to an actual person? tool:{bad}")
    turn = 1 if bad == "badjson" else 2
    got = llm.collect(until_message(GenerationDone, 3, turn), 15)
    assert not any(isinstance(m, (ToolCall, GenerationFailed)) for _, m in got)
    done = got[-1][1]
    assert done.fallback and done.backend == "apology"
    assert spoken(got) == APOLOGY
    # (the worker's log line, "tool call not run: ...", is checked end to end in test_actions.py)


def test_a_final_tool_result_ends_the_turn(llm: WorkerHarness, cloud: OpenAiCloud) -> None:
    before = len(cloud.requests)
    ask(llm, 4, 1, "tool:transfer")  # transfer_call is built in: accepted although not offered
    got = llm.collect(until_message(ToolCall, 4, 1), 15)
    call = got[-1][1]
    assert call.name == "transfer_call"
    llm.send(ToolResult(call_id=4, turn_id=1, tool_call_id=call.tool_call_id, content='{"transferred": true}',
                        final=True), 4, 1)
    got = llm.collect(until_message(GenerationDone, 4, 1), 15)
    assert got[-1][1].finish_reason == "tool_calls" and not spoken(got)
    assert len(cloud.requests) == before + 1  # no follow-up request

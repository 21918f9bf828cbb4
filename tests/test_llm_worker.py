"""The llm worker process with the openai backend against a local SSE endpoint, and the faq fallback.

The endpoint speaks the OpenAI streaming protocol (no model server can run here); the first
user message picks its behaviour: `mode:ok`, `mode:slow`, `mode:stall`, `mode:error`, `mode:drop`.
The faq fallback is the real MiniLM backend.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from ipc.messages import (
    KIND_TEXT,
    CallClosed,
    Cancel,
    ChatMessage,
    Generate,
    GenerationDone,
    GenerationFailed,
    LlmEvent,
)
from ipc.ring import Record
from tests.waiting import wait_until
from voicecall.sim.worker_harness import WorkerHarness
from workers.config import LlmConfig
from workers.llm.knowledge import load_knowledge

TARGET = "workers.llm.worker:LlmWorker"
OK_PIECES = ["Sure", ", we", " can", " do", " that.", " Good", "bye!", " [END", "_CALL]"]
SLOW_PIECES = 150  # at 20 ms each: a 3 s reply, long enough to cancel in the middle
ANSWERS = {e.id: e.answer for e in load_knowledge("configs/knowledge/front_desk.toml").entries}


class SseServer:
    """An OpenAI-compatible /v1/chat/completions on a thread of its own (owned by the fixture)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.closed_early: list[str] = []  # modes whose client went away mid-stream
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="sse-server", daemon=True)
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True and body["messages"][0]["role"] == "system"
        first_user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        mode = first_user.split("mode:", 1)[1].split()[0] if "mode:" in first_user else "ok"
        if mode == "error":
            return web.json_response({"error": {"message": "model overloaded"}}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if mode == "stall":  # headers sent, then nothing until the client gives up
            while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # aiohttp offers no event for a client that went away
            self.closed_early.append(mode)
            return resp
        pieces = OK_PIECES if mode in ("ok", "drop") else [f" w{i}" for i in range(SLOW_PIECES)]
        try:
            for i, text in enumerate(pieces):
                if mode == "drop" and i == 3:
                    request.transport.close()  # type: ignore[union-attr]
                    return resp
                await self._send(resp, {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
                if mode == "slow":
                    await asyncio.sleep(0.02)
            await self._send(resp, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            await self._send(resp, {"choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": len(pieces)}})
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.closed_early.append(mode)
            raise
        return resp

    @staticmethod
    async def _send(resp: web.StreamResponse, chunk: dict[str, Any]) -> None:
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")


@pytest.fixture(scope="module")
def server() -> Iterator[SseServer]:
    srv = SseServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def llm(server: SseServer) -> Iterator[WorkerHarness]:
    config = LlmConfig(backend="openai", base_url=f"http://127.0.0.1:{server.port}/v1", api_model="test",
                       first_token_timeout_s=1.0, connect_timeout_s=1.0, stall_timeout_s=5.0)
    with WorkerHarness("llm", TARGET, config, LlmEvent) as h:
        h.start(120)
        yield h


def ask(h: WorkerHarness, call: int, turn: int, mode: str, question: str = "Hello?") -> None:
    history = [ChatMessage(role="user", content=f"mode:{mode}"), ChatMessage(role="assistant", content="OK."),
               ChatMessage(role="user", content=question)]
    h.send(Generate(call_id=call, turn_id=turn, messages=history, max_tokens=200, temperature=0.0,
                    sent_ns=time.monotonic_ns()), call, turn)


def ended(*turns: tuple[int, int] | int) -> Any:
    """Until every (call, turn) has ended; `ended(call, turn)` for one. The harness drops the rest of a
    batch once this is true, so wait for all turns in one predicate."""
    pairs = {(turns[0], turns[1])} if len(turns) == 2 and isinstance(turns[0], int) else set(turns)
    left = set(pairs)

    def until(rec: Record, msg: Any) -> bool:
        if isinstance(msg, (GenerationDone, GenerationFailed)):
            left.discard((msg.call_id, msg.turn_id))
        return not left

    return until


def texts(got: list[tuple[Record, Any]], call: int, turn: int) -> list[Record]:
    return [r for r, _ in got if r.kind == KIND_TEXT and r.call_id == call and r.turn_id == turn]


def done_of(got: list[tuple[Record, Any]], call: int, turn: int) -> Any:
    found = [m for _, m in got if isinstance(m, (GenerationDone, GenerationFailed))
             and m.call_id == call and m.turn_id == turn]
    assert len(found) == 1, found
    return found[0]


def test_tokens_stream_with_turn_tags_and_the_end_call_token_is_stripped(llm: WorkerHarness) -> None:
    t0 = time.monotonic_ns()
    ask(llm, 1, 3, "ok")
    got = llm.collect(ended(1, 3), 10)
    recs = texts(got, 1, 3)
    assert [r.seq for r in recs] == list(range(len(recs))) and len(recs) >= 5
    assert recs[0].ts_ns > t0
    said = "".join(r.payload.decode() for r in recs)
    assert said.rstrip() == "Sure, we can do that. Goodbye!"  # the token and nothing else removed
    done = done_of(got, 1, 3)
    assert isinstance(done, GenerationDone) and done.end_call and not done.fallback
    assert (done.backend, done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("openai", "stop", 42, 9)
    assert done.first_token_ns == recs[0].ts_ns and got[-1][1] is done  # Done after the last token


@pytest.mark.parametrize(("call", "mode", "slowest_s"), [(10, "stall", 4.0), (11, "error", 0.9)])
def test_a_failing_primary_falls_back_to_the_faq_answer(llm: WorkerHarness, call: int, mode: str,
                                                         slowest_s: float) -> None:
    t0 = time.monotonic()
    ask(llm, call, 1, mode, "When are you open on Saturday?")
    got = llm.collect(ended(call, 1), 10)
    elapsed = time.monotonic() - t0
    done = done_of(got, call, 1)
    assert isinstance(done, GenerationDone) and done.fallback and done.backend == "faq"
    assert "".join(r.payload.decode() for r in texts(got, call, 1)) == ANSWERS["hours"]
    if mode == "stall":
        assert elapsed >= 1.0  # it waited for llm.first_token_timeout_s
    assert elapsed < slowest_s


def test_a_primary_that_drops_mid_reply_keeps_what_was_said(llm: WorkerHarness) -> None:
    ask(llm, 20, 1, "drop")
    got = llm.collect(ended(20, 1), 10)
    done = done_of(got, 20, 1)
    assert isinstance(done, GenerationDone) and done.finish_reason == "error" and not done.fallback
    said = "".join(r.payload.decode() for r in texts(got, 20, 1))
    assert said and "Sure, we can".startswith(said)  # the connection died with pieces in flight


def test_cancel_stops_the_stream_and_nothing_of_the_turn_follows(llm: WorkerHarness, server: SseServer) -> None:
    server.closed_early.clear()
    ask(llm, 30, 2, "slow")
    got = llm.collect(lambda r, m: len(texts([(r, m)], 30, 2)) and r.seq >= 3, 10)
    assert len(texts(got, 30, 2)) >= 3
    llm.send(Cancel(call_id=30, turn_id=2), 30, 2)
    ask(llm, 31, 1, "ok")  # handled after the Cancel: its records mark "after the cancel"
    after = llm.collect(lambda r, m: False, 1.5)  # a window, not a predicate: keep every record read
    first_b = next(i for i, (r, _) in enumerate(after) if r.call_id == 31)
    assert not [r for r, _ in after[first_b:] if r.call_id == 30], "records of the cancelled turn after the cancel"
    assert not [m for _, m in got + after if isinstance(m, GenerationDone) and m.call_id == 30]
    assert len(texts(got + after, 30, 2)) < SLOW_PIECES // 2
    wait_until(lambda: "slow" in server.closed_early, 3, "the HTTP response to be closed on cancel")


def test_two_calls_interleave(llm: WorkerHarness) -> None:
    ask(llm, 40, 1, "slow")
    ask(llm, 41, 1, "slow")
    got = llm.collect(ended((40, 1), (41, 1)), 15)
    order = [r.call_id for r, _ in got if r.kind == KIND_TEXT]
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert switches >= 10, f"the calls did not interleave: {switches} switches"
    for call in (40, 41):
        recs = texts(got, call, 1)
        assert [r.seq for r in recs] == list(range(len(recs)))
        assert "".join(r.payload.decode() for r in recs) == "".join(f" w{i}" for i in range(SLOW_PIECES))
        assert done_of(got, call, 1).completion_tokens == SLOW_PIECES


def test_newer_turn_supersedes_and_stale_turns_are_dropped(llm: WorkerHarness) -> None:
    ask(llm, 50, 5, "slow")
    llm.collect(lambda r, m: r.call_id == 50 and r.kind == KIND_TEXT, 5)
    ask(llm, 50, 6, "ok")
    got = llm.collect(ended(50, 6), 10)
    assert not [m for _, m in got if isinstance(m, GenerationDone) and m.turn_id == 5]
    assert isinstance(done_of(got, 50, 6), GenerationDone)
    ask(llm, 50, 4, "ok")  # older than the newest turn of the call
    late = llm.collect(lambda r, m: False, 0.6)
    assert not [r for r, _ in late if r.call_id == 50 and r.turn_id <= 5]
    llm.send(CallClosed(call_id=50), 50)
    health = llm.health()
    assert health is not None and health.ok


def test_faq_worker_answers_paraphrases_and_goodbye_ends_the_call() -> None:
    with WorkerHarness("llm", TARGET, LlmConfig(), LlmEvent) as h:
        h.start(120)
        for turn, (question, entry) in enumerate([("what's the clinic's street address", "address"),
                                                   ("alright, thanks, goodbye", "goodbye")], start=1):
            h.send(Generate(call_id=7, turn_id=turn, messages=[ChatMessage(role="user", content=question)]), 7, turn)
            got = h.collect(ended(7, turn), 10)
            recs = texts(got, 7, turn)
            assert len(recs) > 2 and "".join(r.payload.decode() for r in recs) == ANSWERS[entry]
            done = done_of(got, 7, turn)
            assert done.backend == "faq" and not done.fallback and done.end_call == (entry == "goodbye")

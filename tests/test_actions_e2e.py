"""Actions end to end: the whole system (supervisor, real stt/llm/tts workers, rings, server) with
`llm.backend = "openai"`, the two clouds scripted at the HTTP boundary, and simulated callers.

    test process: OpenAiCloud (scripted LLM that picks tools) · TwilioCloud (REST API) · tool server
    voicecall:    run.py --config ... (openai backend, faq fallback, transfer_number, [twilio], [[tools]])
    callers:      four SimulatedCalls at once (one system start, calls in parallel to keep the suite short)

A: asks by voice to be transferred -> handoff line heard -> POST Calls/{CallSid}.json Twiml=<Dial>
B: keypad 1234# -> one message -> HTTP tool with filler -> answer spoken; 9# -> stuck tool -> apology;
   5# -> malformed tool call -> faq fallback answer + log line; 0# -> end_call -> REST hang-up
C: silent -> "Are you still there?" -> goodbye -> REST hang-up
D: asks for a person while the LLM server fails -> the faq fallback's transfer entry -> <Dial>
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.running_system import ROOT, RunningSystem
from voicecall.records import call_tool_calls, call_turns, connect, find_call
from voicecall.sim.background import BackgroundLoop, serve
from voicecall.sim.client import SimulatedCall
from voicecall.sim.openai_cloud import OpenAiCloud, Reply, ToolCallStep, last_message
from voicecall.sim.speech import utterance
from voicecall.sim.twilio_cloud import TEST_AUTH_TOKEN, TwilioCloud
from workers.llm.knowledge import load_knowledge

pytestmark = pytest.mark.slow

NUMBER = "+15551230000"
IDLE_PROMPT_S, IDLE_HANGUP_S = 6.0, 10.0
HUMAN = next(e for e in load_knowledge(ROOT / "configs/knowledge/front_desk.toml").entries if e.id == "human")


def keypad(digits: str) -> str:
    return f"keypad: {digits})"


def respond(body: dict[str, Any]) -> Reply:
    """The scripted LLM: picks tools by what the caller said (as transcribed, or keyed in)."""
    last = last_message(body)
    if last.get("role") == "tool":
        result = json.loads(last["content"])
        return Reply.say(f"Order {result['order']} has shipped.")
    said = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user").lower()
    if keypad("1 2 3 4") in said:
        return Reply.call("lookup_order", '{"order": "1234"}', before="Let me look that up.")
    if keypad("9") in said:
        return Reply.call("check_stock", '{"item": "blue"}')
    if keypad("5") in said:
        return Reply.call("lookup_order", '{"order": ')  # malformed JSON arguments
    if keypad("0") in said:
        return Reply(["Thank you for calling. Goodbye!", ToolCallStep("end_call")])
    if "transfer" in said or "front desk" in said:
        return Reply.call("transfer_call", "{}")
    if "person" in said:
        return Reply(status=503)  # the LLM server fails: the faq fallback answers
    return Reply.say("I can help you with your orders.")


class World:
    """The clouds and the operator's tool server, on a loop of their own."""

    def __init__(self) -> None:
        self.bg = BackgroundLoop()
        self.twilio = TwilioCloud()
        self.llm = OpenAiCloud(respond)
        self.tool_calls: list[dict[str, Any]] = []
        self.bg.run(self.twilio.start())
        self.bg.run(self.llm.start())
        app = web.Application()
        app.router.add_post("/lookup", self._lookup)
        app.router.add_post("/stuck", self._stuck)
        self._runner, self.tools_url = self.bg.run(serve(app))

    async def _lookup(self, request: web.Request) -> web.Response:
        self.tool_calls.append(await request.json())
        await asyncio.sleep(1.5)  # slower than tool_filler_after_ms: the filler is said
        return web.json_response({"order": "1234", "status": "shipped"})

    async def _stuck(self, request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.json_response({})

    def posts(self, call_sid: str, field: str) -> list[Any]:
        return [r for r in list(self.twilio.requests) if r.call_sid == call_sid and field in r.form]

    def close(self) -> None:
        self.bg.run(self._runner.cleanup())
        self.bg.run(self.llm.stop())
        self.bg.run(self.twilio.stop())
        self.bg.close()


def edit_config(world: World) -> Callable[[str], str]:
    """The embedded default with the openai backend, a transfer number, silence rules, the clouds."""
    def edit(text: str) -> str:
        for key, value in {
            "transfer_number": f'"{NUMBER}"', "idle_prompt_s": IDLE_PROMPT_S, "idle_hangup_s": IDLE_HANGUP_S,
            "api_base_url": f'"{world.twilio.base_url}"', "tool_filler_after_ms": 700,
        }.items():
            text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
            assert n == 1, key
        text, n = re.subn(r'^backend = "faq" .*$', f'backend = "openai"\nbase_url = "{world.llm.base_url}"\n'
                          'api_model = "scripted"\nfallback = "faq"\nfirst_token_timeout_s = 4.0', text, count=1,
                          flags=re.M)
        assert n == 1
        return text
    return edit


def tools_toml(world: World) -> str:
    return f'''
[[tools]]
name = "lookup_order"
description = "Find an order by its number."
url = "{world.tools_url}/lookup"
timeout_s = 5.0
parameters = {{ type = "object", properties = {{ order = {{ type = "string" }} }}, required = ["order"] }}

[[tools]]
name = "check_stock"
description = "Check whether an item is in stock."
url = "{world.tools_url}/stuck"
timeout_s = 1.5
'''


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


@pytest.fixture(scope="module")
def system(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    s = RunningSystem(tmp_path_factory.mktemp("actions"), extra_toml=tools_toml(world), edit=edit_config(world),
                      env=world.twilio.env())
    with s.serving():
        yield s


async def quiet_until(call: SimulatedCall, done: Callable[[], Any], limit_s: float, what: str) -> Any:
    """Keep the line open (silence, like a real caller) until `done()` is true."""
    end = time.monotonic() + limit_s
    while not (found := done()):
        if time.monotonic() > end:
            raise AssertionError(f"call {call.call_sid}: {what} did not happen within {limit_s:.0f} s")
        await call.silence(100)
    return found


def heard_out(call: SimulatedCall) -> Callable[[], bool]:
    """The agent's audio so far has started and played out (the caller may talk now)."""
    return lambda: (call.server_audio.is_set() and bool(call.buffer.marks)
                    and all(m.echoed_ns or m.dropped for m in call.buffer.marks)
                    and time.monotonic_ns() - call.buffer.play_end_ns > 300_000_000)


def agent_turn(system: RunningSystem, call_sid: str, contains: str) -> Callable[[], dict | None]:
    def find() -> dict | None:
        conn = connect(system.db, readonly=True)
        try:
            call = find_call(conn, call_sid)
            turns = [dict(t) for t in call_turns(conn, call["id"])] if call is not None else []
        finally:
            conn.close()
        return next((t for t in turns if t["role"] == "agent" and contains in t["text"]), None)
    return find


async def press(call: SimulatedCall, digits: str) -> None:
    for d in digits:
        await call.send_dtmf(d)
        await call.silence(100)


#: every call placed, closed by the fixture even when a caller fails (an open socket left to the
#: garbage collector is reported as an error in whichever test runs next)
_OPENED: list[SimulatedCall] = []


async def open_call(system: RunningSystem, after: asyncio.Event | None = None, greeting: bool = True) -> SimulatedCall:
    """Place a signed call (once `after` is set) and, with `greeting`, listen to the greeting."""
    if after is not None:
        await after.wait()
    call = SimulatedCall(system.url, auth_token=TEST_AUTH_TOKEN)  # the token is set: calls are signed
    _OPENED.append(call)
    assert await call.place() == 200
    await call.connect()
    if greeting:
        await quiet_until(call, heard_out(call), 30, "the greeting")
    return call


async def hang_up(call: SimulatedCall) -> dict[str, Any]:
    """What Twilio does once the call is transferred or completed: `stop`, then the socket closes."""
    await call.stop()
    await call.close()
    return {"sid": call.call_sid}


async def caller_a(system: RunningSystem, world: World, greeted: asyncio.Event) -> dict[str, Any]:
    call = await open_call(system)
    greeted.set()
    await call.stream_audio(utterance("Please transfer me to the front desk.").mulaw)
    post = (await quiet_until(call, lambda: world.posts(call.call_sid, "Twiml"), 40, "the transfer POST"))[0]
    echoes = [m.echoed_ns for m in call.buffer.marks if m.echoed_ns]
    return {**await hang_up(call), "post": post, "last_echo_ns": max(echoes)}


async def caller_b(system: RunningSystem, world: World, greeted: asyncio.Event) -> dict[str, Any]:
    call = await open_call(system, greeted)
    await press(call, "1234#")
    await quiet_until(call, agent_turn(system, call.call_sid, "has shipped"), 40, "the lookup answer")
    await press(call, "9#")
    await quiet_until(call, agent_turn(system, call.call_sid, "couldn't finish"), 30, "the stuck tool's apology")
    await press(call, "5#")
    await quiet_until(call, agent_turn(system, call.call_sid, load_knowledge(
        ROOT / "configs/knowledge/front_desk.toml").fallback[:30]), 30, "the fallback answer")
    await press(call, "0#")
    await quiet_until(call, lambda: world.posts(call.call_sid, "Status"), 30, "the REST hang-up")
    return await hang_up(call)


async def caller_c(system: RunningSystem, world: World, greeted: asyncio.Event) -> dict[str, Any]:
    call = await open_call(system, greeted, greeting=False)
    await quiet_until(call, lambda: world.posts(call.call_sid, "Status"), 60, "the idle hang-up")
    return await hang_up(call)


async def caller_d(system: RunningSystem, world: World, greeted: asyncio.Event) -> dict[str, Any]:
    call = await open_call(system, greeted)
    await call.stream_audio(utterance("Can I talk to a real person, please?").mulaw)
    await quiet_until(call, lambda: world.posts(call.call_sid, "Twiml"), 40, "the transfer POST")
    return await hang_up(call)


@pytest.fixture(scope="module")
def calls(system: RunningSystem, world: World) -> dict[str, dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        # The others wait for A's greeting: right after start-up the canned greeting may still be in
        # synthesis, and four greetings synthesized at once on two shared cores can miss
        # call.worker_deadline_s (a start-up weakness noted for the integrator, not what this tests).
        greeted = asyncio.Event()
        try:
            return list(await asyncio.gather(*(f(system, world, greeted)
                                               for f in (caller_a, caller_b, caller_c, caller_d))))
        finally:
            for call in _OPENED:
                await call.close()

    t0 = time.monotonic()
    out = dict(zip("ABCD", asyncio.run(main()), strict=True))
    print(f"four calls in {time.monotonic() - t0:.1f} s")
    time.sleep(0.5)  # the records writer commits the ends of the calls
    return out


def record(system: RunningSystem, sid: str) -> tuple[dict, list[dict], dict[int, list[dict]]]:
    conn = connect(system.db, readonly=True)
    try:
        call = find_call(conn, sid)
        assert call is not None
        return dict(call), [dict(t) for t in call_turns(conn, call["id"])], call_tool_calls(conn, call["id"])
    finally:
        conn.close()


def test_a_caller_asking_for_a_person_is_transferred_after_hearing_the_handoff(
        system: RunningSystem, world: World, calls: dict[str, dict[str, Any]]) -> None:
    a = calls["A"]
    post = a["post"]
    assert post.authorized and post.path.endswith(f"/Calls/{a['sid']}.json")
    assert f"<Dial>{NUMBER}</Dial>" in post.field("Twiml")
    assert post.at_ns > a["last_echo_ns"]  # posted after the caller heard the handoff line
    offered = [t["function"]["name"] for t in next(r for r in world.llm.requests if "tools" in r)["tools"]]
    assert {"transfer_call", "lookup_order", "check_stock", "end_call"} <= set(offered)
    rec, turns, tools = record(system, a["sid"])
    handoff = next(t for t in turns if t["role"] == "agent" and t["turn_id"] > 0)
    assert "put you through" in handoff["text"]
    assert [t["name"] for t in tools[handoff["turn_id"]]] == ["transfer_call"] and tools[handoff["turn_id"]][0]["ok"]
    assert rec["end_reason"] == f"transferred to {NUMBER}"
    shown = subprocess.run([sys.executable, "tools/calls.py", "--db", str(system.db), "show", a["sid"]], cwd=ROOT,
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})  # this tree's voicecall, not an installed one
    assert "tool transfer_call({})" in shown.stdout, shown.stdout + shown.stderr
    with urllib.request.urlopen(f"{system.url}/calls.json", timeout=5) as resp:
        page = json.loads(resp.read())
    shown_calls = {c["call_sid"]: c for c in page["ended"]}  # /calls: ended calls, turns, tool calls
    turn = next(t for t in shown_calls[a["sid"]]["turns"] if t["tools"])
    assert turn["tools"][0]["name"] == "transfer_call"


def test_keypad_tools_with_filler_a_stuck_tool_a_bad_call_and_end_call(
        system: RunningSystem, world: World, calls: dict[str, dict[str, Any]]) -> None:
    sid = calls["B"]["sid"]
    keyed = [r for r in world.llm.requests if "keypad: 1 2 3 4)" in str(r["messages"][-1].get("content"))]
    assert keyed and keyed[0]["messages"][-1]["content"].endswith("(The caller pressed these keys on the phone keypad: 1 2 3 4)")
    assert world.tool_calls == [{"order": "1234"}]
    follow_up = next(r for r in world.llm.requests if r["messages"][-1]["role"] == "tool")
    assert json.loads(follow_up["messages"][-1]["content"]) == {"order": "1234", "status": "shipped"}
    _rec, turns, tools = record(system, sid)
    lookup = next(t for t in turns if t["role"] == "agent" and "has shipped" in t["text"])
    # the model's words, the filler (the tool took 1.5 s), then the answer: as the caller heard it
    assert re.search(r"Let me look that up\.\s+One moment while I check that\.\s+Order 1234 has shipped\.",
                     lookup["text"]), lookup["text"]
    assert tools[lookup["turn_id"]][0]["name"] == "lookup_order" and tools[lookup["turn_id"]][0]["ok"]
    stuck = next(t for t in turns if t["role"] == "agent" and "couldn't finish" in t["text"])
    assert not tools[stuck["turn_id"]][0]["ok"] and "no answer within 1.5 s" in tools[stuck["turn_id"]][0]["result"]
    fallback = next(t for t in turns if t["role"] == "agent" and t["fallback"])
    assert fallback["turn_id"] not in tools  # the malformed call was never run
    log = system.log()
    assert "tool call not run" in log and "arguments are not JSON" in log
    hang_up = world.posts(sid, "Status")
    assert len(hang_up) == 1 and hang_up[0].field("Status") == "completed"
    assert any("Goodbye" in t["text"] for t in turns if t["role"] == "agent")


def test_an_idle_caller_is_prompted_then_let_go(system: RunningSystem, world: World,
                                                calls: dict[str, dict[str, Any]]) -> None:
    rec, turns, _ = record(system, calls["C"]["sid"])
    agent = [t["text"] for t in turns if t["role"] == "agent"]
    assert agent[-2:] == ["Are you still there?", "I haven't heard from you, so I'll end the call now. Goodbye!"]
    assert rec["end_reason"] == "caller silent"
    assert [r.field("Status") for r in world.posts(calls["C"]["sid"], "Status")] == ["completed"]


def test_the_faq_fallbacks_transfer_entry_transfers_too(system: RunningSystem, world: World,
                                                        calls: dict[str, dict[str, Any]]) -> None:
    sid = calls["D"]["sid"]
    (post,) = world.posts(sid, "Twiml")
    assert f"<Dial>{NUMBER}</Dial>" in post.field("Twiml")
    _rec, turns, tools = record(system, sid)
    handoff = next(t for t in turns if t["role"] == "agent" and t["turn_id"] > 0)
    assert handoff["text"].strip() == HUMAN.answer and handoff["fallback"]
    assert [t["name"] for t in tools[handoff["turn_id"]]] == ["transfer_call"]


def test_no_credentials_in_the_logs(system: RunningSystem, calls: dict[str, dict[str, Any]]) -> None:
    log = system.log()
    assert TEST_AUTH_TOKEN not in log and "Basic " not in log and "Authorization" not in log
    assert Path(system.db).exists()

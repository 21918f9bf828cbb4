"""CallSession's actions over real rings: transfer, tools with filler and timeout, keypad, silence.

The test speaks the workers' protocol on the far end of each ring (as in test_call_session.py),
so every moment is placed exactly: the tool call, the filler, the mark that proves the handoff
line was heard. Twilio's REST API is the scripted local cloud and the operator's tool a real
local HTTP server. The same features run end to end with real workers in test_actions_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ipc.messages import (
    Cancel,
    Generate,
    GenerationDone,
    SentenceDone,
    SpeechStarted,
    Synthesize,
    ToolCall,
    ToolResult,
    WorkerState,
)
from ipc.ring import OwnedRing
from tests.test_call_session import FakePort, FarEnd, _finish_greeting, _settle, _turn_ended
from tests.waiting import wait_until_async
from voicecall.config import Config, ToolConfig
from voicecall.conversation.canned import CannedAudio
from voicecall.conversation.http_tools import HttpTools
from voicecall.conversation.links import WorkerLinks
from voicecall.conversation.metrics import CallMetrics
from voicecall.conversation.session import CallInfo, CallSession, CallState, SessionDeps
from voicecall.sim.background import serve
from voicecall.sim.twilio_cloud import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioCloud
from voicecall.twilio.rest import TwilioCredentials, TwilioRest

CALL_SID = "CA" + "5" * 32
NUMBER = "+15551230000"
Scenario = Callable[[CallSession, FakePort, FarEnd, "World"], Awaitable[None]]


class World:
    """The clouds around the session: Twilio's REST API and the operator's tool server."""

    def __init__(self) -> None:
        self.cloud = TwilioCloud()
        self.tool_calls: list[dict[str, Any]] = []
        self.tool_url = ""

    async def start(self) -> None:
        await self.cloud.start()
        app = web.Application()
        app.router.add_post("/lookup", self._lookup)
        app.router.add_post("/stuck", self._stuck)
        self._tools, self.tool_url = await serve(app)

    async def stop(self) -> None:
        await self._tools.cleanup()
        await self.cloud.stop()

    async def _lookup(self, request: web.Request) -> web.Response:
        args = await request.json()
        self.tool_calls.append(args)
        await asyncio.sleep(0.4)  # longer than tool_filler_after_ms
        return web.json_response({"order": args.get("order"), "status": "shipped"})

    async def _stuck(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})


def run(scenario: Scenario, *, credentials: bool = True, **call: Any) -> None:
    rings = {label: OwnedRing(label, 1 << 16) for label in ("stt_in", "stt_out", "llm_in", "llm_out", "tts_in", "tts_out")}
    far = FarEnd(rings)
    try:
        async def main() -> None:
            world = World()
            await world.start()
            cfg = Config()
            for key, value in {"tool_filler_after_ms": 150, **call}.items():
                setattr(cfg.call, key, value)
            cfg.twilio.api_base_url = world.cloud.base_url
            cfg.tools = [ToolConfig(name="lookup_order", url=f"{world.tool_url}/lookup", timeout_s=2.0),
                         ToolConfig(name="check_stock", url=f"{world.tool_url}/stuck", timeout_s=0.1)]
            rest = TwilioRest(cfg.twilio, TwilioCredentials(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN) if credentials else None)
            tools = HttpTools(cfg.tools)
            links = WorkerLinks({k: r.spec for k, r in rings.items()})
            links.start()
            for w in ("stt", "llm", "tts"):
                links.set_state(w, WorkerState.READY)
            deps = SessionDeps(cfg=cfg, links=links, records=None, metrics=CallMetrics(),
                               canned=CannedAudio(cfg.call.greeting, cfg.call.apology), rest=rest, http_tools=tools)
            port = FakePort()
            session = CallSession(1, CallInfo(call_sid=CALL_SID), port, deps)
            session.start()
            try:
                await scenario(session, port, far, world)
            finally:
                await session.close("test over")
                links.close()
                await rest.close()
                await tools.close()
                await world.stop()

        asyncio.run(main())
    finally:
        far.close()
        for r in rings.values():
            r.close()


async def ask(session: CallSession, far: FarEnd, turn: int, text: str) -> Generate:
    far.emit("stt", _turn_ended(turn, text), 1, turn)
    await _settle(far)
    gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
    assert gen, "no Generate sent"
    return gen[-1]


async def until(predicate: Callable[[], Any], timeout_s: float = 3.0) -> Any:
    return await wait_until_async(predicate, timeout_s, "the session's next step", poll_s=0.01)


def said(far: FarEnd, sink: list[Synthesize]) -> list[Synthesize]:
    """Synthesize requests so far (accumulated in `sink`: the ring is read once)."""
    sink += [m for m in far.requests("tts") if isinstance(m, Synthesize)]
    return sink


async def play(session: CallSession, port: FakePort, far: FarEnd, s: Synthesize, heard: bool = True) -> None:
    """The tts worker speaks sentence `s`; the caller hears it (its mark is echoed) when `heard`."""
    far.audio(1, s.turn_id, s.seq)
    far.emit("tts", SentenceDone(call_id=1, turn_id=s.turn_id, seq=s.seq, frames=2, duration_ms=40, first_audio_ns=1),
             1, s.turn_id)
    await _settle(far)
    if heard:
        session.on_mark(port.marks[-1], played=True)
        await _settle(far)


def results(far: FarEnd, sink: list[Any]) -> list[ToolResult]:
    sink += [m for m in far.requests("llm") if isinstance(m, ToolResult)]
    return [m for m in sink if isinstance(m, ToolResult)]


def tool_call(turn: int, name: str, args: str = "{}") -> ToolCall:
    return ToolCall(call_id=1, turn_id=turn, tool_call_id=f"c{turn}-{name}", name=name, arguments_json=args)


def test_transfer_waits_for_the_handoff_line_to_be_heard_then_dials() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        await _finish_greeting(session, port, far)
        gen = await ask(session, far, 1, "Can I speak to a person?")
        assert [t.name for t in gen.tools] == ["transfer_call", "lookup_order", "check_stock"]
        far.emit("llm", tool_call(1, "transfer_call"), 1, 1)
        await _settle(far)
        lines: list[Synthesize] = []
        handoff = (await until(lambda: said(far, lines)))[-1]
        assert handoff.text == session.deps.cfg.call.transfer_message
        await play(session, port, far, handoff, heard=False)
        await asyncio.sleep(0.2)
        assert not world.cloud.requests, "transferred before the caller heard the handoff line"
        session.on_mark(port.marks[-1], played=True)
        req = await world.cloud.wait_for(lambda r: "Twiml" in r.form, 3)
        assert req.call_sid == CALL_SID and f"<Dial>{NUMBER}</Dial>" in req.field("Twiml")
        got: list[Any] = []
        result = (await until(lambda: results(far, got)))[0]
        assert result.final and json.loads(result.content) == {"transferred": True, "to": NUMBER}
        assert session.end_reason == f"transferred to {NUMBER}"

    run(scenario, transfer_number=NUMBER)


def test_caller_going_on_while_the_transfer_says_its_handoff_line_is_one_turn_transferred_once() -> None:
    """"Can I talk to a person? ... please": the transfer's handoff line is cut, nothing is dialled
    for the first half, and the joined turn is answered (here: transferred) once."""
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        await _finish_greeting(session, port, far)
        await ask(session, far, 1, "Can I talk to a real person?")
        far.emit("llm", tool_call(1, "transfer_call"), 1, 1)
        await _settle(far)
        lines: list[Synthesize] = []
        handoff = (await until(lambda: said(far, lines)))[-1]
        await play(session, port, far, handoff, heard=False)
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=600, detected_ns=1), 1, 2)
        await _settle(far)
        assert port.clears == 1 and session._tool_tasks, "the transfer was stopped at the onset"
        far.emit("stt", _turn_ended(2, "Please.", start_ms=600), 1, 2)
        gen = await ask_pending(far)
        assert gen.turn_id == 2 and gen.messages[-1].content == "Can I talk to a real person? Please."
        assert not session._tool_tasks and not world.cloud.requests
        far.emit("llm", tool_call(2, "transfer_call"), 1, 2)
        await _settle(far)
        handoff = (await until(lambda: said(far, lines)))[-1]
        assert handoff.turn_id == 2
        await play(session, port, far, handoff)
        await world.cloud.wait_for(lambda r: "Twiml" in r.form, 3)
        await asyncio.sleep(0.2)
        assert len([r for r in world.cloud.requests if "Twiml" in r.form]) == 1

    run(scenario, transfer_number=NUMBER)


async def ask_pending(far: FarEnd) -> Generate:
    await _settle(far)
    gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
    assert gen, "no Generate sent"
    return gen[-1]


def test_transfer_refused_in_words_without_a_number_or_credentials_and_on_twilio_errors() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        call = session.deps.cfg.call
        await _finish_greeting(session, port, far)
        gen = await ask(session, far, 1, "Put me through to someone.")
        assert "transfer_call" not in [t.name for t in gen.tools]  # no number: not offered
        far.emit("llm", tool_call(1, "transfer_call"), 1, 1)  # asked for anyway (faq entry, stray model)
        lines: list[Synthesize] = []
        assert (await until(lambda: said(far, lines)))[-1].text == call.transfer_unavailable_message
        got: list[Any] = []
        result = (await until(lambda: results(far, got)))[0]
        assert result.final and not result.ok and "transfer_number" in result.content
        assert not world.cloud.requests and session.state is not CallState.ENDED

    run(scenario)

    async def twilio_fails(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        call = session.deps.cfg.call
        await _finish_greeting(session, port, far)
        world.cloud.fail_next(500, 20500, "Internal Server Error")
        await ask(session, far, 1, "Transfer me, please.")
        far.tokens(1, 1, "Sure, putting you through.")
        far.emit("llm", tool_call(1, "transfer_call"), 1, 1)
        lines: list[Synthesize] = []
        first = (await until(lambda: said(far, lines)))[0]
        assert first.text == "Sure, putting you through."  # the model's own words are the handoff line
        await play(session, port, far, first)
        await until(lambda: len(said(far, lines)) == 2)
        assert lines[-1].text == call.transfer_failed_message
        got: list[Any] = []
        result = (await until(lambda: results(far, got)))[0]
        assert result.final and not result.ok and json.loads(result.content)["code"] == 20500
        far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="tool_calls"), 1, 1)
        await _settle(far)
        await play(session, port, far, lines[-1])
        assert session.state is CallState.LISTENING  # the call goes on
        await ask(session, far, 2, "Okay, what are your hours?")

    run(twilio_fails, transfer_number=NUMBER)

    async def no_credentials(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        await _finish_greeting(session, port, far)
        await ask(session, far, 1, "Transfer me.")
        far.emit("llm", tool_call(1, "transfer_call"), 1, 1)
        lines: list[Synthesize] = []
        assert (await until(lambda: said(far, lines)))[-1].text == session.deps.cfg.call.transfer_unavailable_message
        assert not world.cloud.requests

    run(no_credentials, credentials=False, transfer_number=NUMBER)


def test_http_tool_gets_a_filler_then_its_answer_goes_back_and_a_stuck_tool_gets_an_apology() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        call = session.deps.cfg.call
        await _finish_greeting(session, port, far)
        await ask(session, far, 1, "Where is order 17?")
        far.emit("llm", tool_call(1, "lookup_order", '{"order": "17"}'), 1, 1)
        lines: list[Synthesize] = []
        assert (await until(lambda: said(far, lines)))[0].text == call.tool_filler  # after 150 ms, tool still busy
        got: list[Any] = []
        result = (await until(lambda: results(far, got)))[0]
        assert json.loads(result.content) == {"order": "17", "status": "shipped"} and not result.final
        assert world.tool_calls == [{"order": "17"}]
        far.tokens(1, 1, "Order 17 has shipped.")
        far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="stop"), 1, 1)
        await until(lambda: len(said(far, lines)) == 2)
        for s in lines:
            await play(session, port, far, s)
        assert session.state is CallState.LISTENING
        history = session.conversation.messages()
        assert [m.role for m in history[-4:]] == ["user", "assistant", "tool", "assistant"]
        assert history[-3].tool_calls[0].name == "lookup_order" and "shipped" in history[-2].content

        await ask(session, far, 2, "Is the blue one in stock?")
        far.emit("llm", tool_call(2, "check_stock"), 1, 2)
        lines = []
        got = []
        result = (await until(lambda: results(far, got)))[0]
        assert result.final and not result.ok and "no answer within" in result.content
        assert [s.text for s in said(far, lines)] == [call.tool_failed_message]  # timed out (0.1 s) before the filler was due

    run(scenario)


def test_barge_in_during_the_filler_stops_the_tool() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        await _finish_greeting(session, port, far)
        await ask(session, far, 1, "Where is order 17?")
        far.emit("llm", tool_call(1, "lookup_order", '{"order": "17"}'), 1, 1)
        lines: list[Synthesize] = []
        filler = (await until(lambda: said(far, lines)))[0]
        await play(session, port, far, filler, heard=False)
        far.emit("stt", SpeechStarted(call_id=1, turn_id=2, media_ms=9000, detected_ns=1), 1, 2)
        await _settle(far)
        assert port.clears == 1 and session.state is CallState.LISTENING
        await asyncio.sleep(0.6)  # the tool would have answered by now
        to_llm = far.requests("llm")
        assert any(isinstance(m, Cancel) for m in to_llm) and not any(isinstance(m, ToolResult) for m in to_llm)

    run(scenario)


def test_keypad_digits_reach_the_llm_as_one_message() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        await _finish_greeting(session, port, far)
        for digit in "1234":
            session.on_dtmf(digit)
            await asyncio.sleep(0.05)
        await _settle(far)
        assert not [m for m in far.requests("llm") if isinstance(m, Generate)]  # still collecting
        session.on_dtmf("#")
        await _settle(far)
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert len(gen) == 1 and gen[0].messages[-1].content.endswith("keypad: 1 2 3 4)")
        session.on_dtmf("7")  # no `#`: sent once `dtmf_inter_digit_s` passes without another digit
        await asyncio.sleep(0.1)
        assert not [m for m in far.requests("llm") if isinstance(m, Generate)]
        await asyncio.sleep(0.3)
        gen = [m for m in far.requests("llm") if isinstance(m, Generate)]
        assert len(gen) == 1 and gen[0].messages[-1].content.endswith("keypad: 7)")

    run(scenario, dtmf_inter_digit_s=0.3)


def test_idle_caller_is_prompted_then_let_go_and_end_call_without_words_says_goodbye() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        call = session.deps.cfg.call
        await _finish_greeting(session, port, far)  # the idle clock starts when the greeting was heard
        lines: list[Synthesize] = []
        prompt = (await until(lambda: said(far, lines), 2))[0]
        assert prompt.text == call.idle_prompt
        await play(session, port, far, prompt)
        assert port.hung_up is None
        bye = (await until(lambda: len(said(far, lines)) == 2 and lines, 2))[1]
        assert bye.text == call.idle_goodbye
        await play(session, port, far, bye)
        assert await until(lambda: port.hung_up) == "caller silent"  # the hang-up runs as a task

    run(scenario, idle_prompt_s=0.3, idle_hangup_s=0.8)

    async def speech_resets(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        await _finish_greeting(session, port, far)
        await asyncio.sleep(0.2)
        await ask(session, far, 1, "Goodbye.")  # caller spoke: the clock stopped
        far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="tool_calls", end_call=True), 1, 1)
        lines: list[Synthesize] = []
        bye = (await until(lambda: said(far, lines)))[0]
        assert bye.text == session.deps.cfg.call.goodbye and bye.turn_id == 1
        await play(session, port, far, bye)
        assert await until(lambda: port.hung_up) == "agent said goodbye"  # the hang-up runs as a task

    run(speech_resets, idle_prompt_s=0.3)


def test_max_duration_ends_politely_after_the_reply_in_flight() -> None:
    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        await _finish_greeting(session, port, far)
        await ask(session, far, 1, "Tell me about parking.")
        await asyncio.sleep(0.5)  # the limit passes while the reply is on its way
        far.tokens(1, 1, "Parking is free behind the building.")
        far.emit("llm", GenerationDone(call_id=1, turn_id=1, finish_reason="stop"), 1, 1)
        lines: list[Synthesize] = []
        answer = (await until(lambda: said(far, lines)))[0]
        await play(session, port, far, answer)
        farewell = (await until(lambda: len(said(far, lines)) == 2 and lines))[1]
        assert farewell.text == session.deps.cfg.call.max_duration_message
        await play(session, port, far, farewell)
        assert await until(lambda: port.hung_up) == "max duration"  # the hang-up runs as a task

    run(scenario, max_duration_s=0.3)


def test_an_agent_profile_brings_its_own_transfer_number_and_tool_list() -> None:
    """No `call.transfer_number`: the call's agent profile has one, and offers only the tools it lists."""
    agent_number = "+15550123999"

    async def scenario(session: CallSession, port: FakePort, far: FarEnd, world: World) -> None:
        session.info.transfer_number = agent_number  # what voicecall/telephony/operator.py sets from the profile
        session.info.tools = ["transfer_call"]
        await _finish_greeting(session, port, far)
        gen = await ask(session, far, 1, "Can I speak to a person?")
        assert [t.name for t in gen.tools] == ["transfer_call"]
        far.emit("llm", tool_call(1, "transfer_call"), 1, 1)
        await _settle(far)
        lines: list[Synthesize] = []
        handoff = (await until(lambda: said(far, lines)))[-1]
        await play(session, port, far, handoff)
        req = await world.cloud.wait_for(lambda r: "Twiml" in r.form, 3)
        assert f"<Dial>{agent_number}</Dial>" in req.field("Twiml")

    run(scenario)

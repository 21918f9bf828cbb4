"""The softphone in a real browser: headless Chromium with a fake microphone playing a spoken question.

1. Protocol conformance: the page calls a scripted Twilio-side peer that records every frame
   and plays audio, marks and a clear at it; the page must speak Media Streams exactly as Twilio
   does and echo each mark only once its audio has played (or at once after `clear`).
2. End to end: the page calls the real running system (`python run.py`, real models); the
   agent's answer shows in the transcript, its audio plays, hang-up ends the call, /calls shows
   it. Screenshots go to $VOICECALL_SCREENSHOT_DIR (e.g. `docs`) or the test's temp dir.

Skips, saying why, only when Chromium is not installed and cannot be.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import threading
import time
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from ipc.audio import ulaw_decode, ulaw_encode
from tests.call_registry import StubRegistry, StubSession
from tests.cdp import Browser, chromium_missing_reason
from tests.running_system import RunningSystem, free_port
from tests.waiting import wait_until, wait_until_async
from voicecall.config import Config
from voicecall.sim.speech import transcribe_mulaw, utterance, word_error_rate
from voicecall.web.views import SOCKETS_KEY, add_views

pytestmark = [pytest.mark.slow, pytest.mark.skipif(chromium_missing_reason() is not None,
                                                   reason=chromium_missing_reason() or "")]

QUESTION = "What time do you open on Saturday?"
SID = re.compile(r"^(AC|CA|MZ)[0-9a-f]{32}$")


def _question_wav(path: Path, lead_ms: int, trail_ms: int) -> Path:
    """The caller's words as the fake microphone's file: Piper speech, 48 kHz int16 mono."""
    import soxr

    utt = utterance(QUESTION, lead_ms=lead_ms, trail_ms=trail_ms)
    pcm = soxr.resample(ulaw_decode(utt.mulaw).astype(np.float32) / 32768.0, 8000, 48000, quality="HQ")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(np.clip(np.round(pcm * 32767), -32768, 32767).astype(np.int16).tobytes())
    return path


def _shots_dir(tmp_path: Path) -> Path:
    out = os.environ.get("VOICECALL_SCREENSHOT_DIR")
    return Path(out) if out else tmp_path


# ---------------------------------------------------------------- 1. conformance against a scripted peer


def _tone(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000.0
    return ulaw_encode((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))


class ScriptedPeer:
    """Our server's side of a Media Stream, scripted: plays audio, marks and a clear; records all.

    Runs its own event loop on a thread it owns; `close()` stops both.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.frames: list[tuple[float, str]] = []  # (monotonic s, raw text) of every page message
        self.sent: dict[str, float] = {}            # mark name -> when we sent it
        self.echoed: dict[str, float] = {}          # mark name -> when the page echoed it
        self.clear_at = 0.0
        self.script_done = threading.Event()
        self.closed = threading.Event()
        self.errors: list[str] = []
        self.registry = StubRegistry()
        cfg = Config()
        cfg.records.db_path = str(tmp_path / "none.db")
        self.app = web.Application()
        add_views(self.app, self.registry, cfg)
        self.app.router.add_get("/twilio/media", self._media)
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._echo_events: dict[str, asyncio.Event] = {}
        self._runner = web.AppRunner(self.app, shutdown_timeout=2.0)
        self._thread = threading.Thread(target=self._serve, name="scripted-peer", daemon=False)
        started = threading.Event()
        self._started = started
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("scripted peer did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()
        for task in self._tasks:
            task.cancel()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)

    async def _media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async for msg in ws:
                now = time.monotonic()
                self.frames.append((now, msg.data))
                obj = json.loads(msg.data)
                if obj["event"] == "start":
                    self.registry.sessions[1] = StubSession(1, obj["start"]["callSid"], state="speaking")
                    task = asyncio.get_running_loop().create_task(self._script(ws, obj["streamSid"]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif obj["event"] == "mark":
                    self.echoed[obj["mark"]["name"]] = now
                    self._echo_event(obj["mark"]["name"]).set()
        finally:
            self.closed.set()
        return ws

    def _echo_event(self, name: str) -> asyncio.Event:
        return self._echo_events.setdefault(name, asyncio.Event())

    async def _wait_echo(self, name: str, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):  # the test's assertions say which echo was missing
            await asyncio.wait_for(self._echo_event(name).wait(), timeout_s)

    async def _script(self, ws: web.WebSocketResponse, sid: str) -> None:
        async def send(obj: dict[str, Any]) -> None:
            await ws.send_str(json.dumps(obj))

        async def media(mulaw: bytes, stream_sid: str = sid) -> None:
            await send({"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(mulaw).decode()}})

        async def mark(name: str) -> None:
            self.sent[name] = time.monotonic()
            await send({"event": "mark", "streamSid": sid, "mark": {"name": name}})

        try:
            await wait_until_async(lambda: self.app[SOCKETS_KEY], 10, "the page to subscribe to the call's events")
            self.registry.emit(1, "agent", {"text": "Hello, this is the scripted peer.", "turn": 0})
            await media(_tone(1.0))                 # one big message: Twilio takes any size
            await mark("a")
            for i in range(25):                     # then 0.5 s as 20 ms frames
                await media(_tone(0.02, 660 + i))
            await mark("b")
            await media(_tone(0.5), stream_sid="MZ" + "0" * 32)  # not this stream: must be ignored
            await self._wait_echo("b", 8)
            await mark("empty")                     # nothing buffered: echoed at once
            await self._wait_echo("empty", 3)
            await media(_tone(3.0))
            await mark("c")
            await media(_tone(1.0))
            await mark("d")
            await asyncio.sleep(0.4)
            self.clear_at = time.monotonic()
            await send({"event": "clear", "streamSid": sid})
            await self._wait_echo("d", 3)
            self.registry.emit(1, "final", {"text": "what time do you open", "turn": 1})
            self.registry.emit(1, "agent", {"text": "We open at nine.", "turn": 1})
            self.registry.emit(1, "interrupted", {"turn": 1, "heard": "We open", "why": "barge-in"})
            self.registry.emit(1, "turn", {"turn": 1, "latency_ms": {"voice_to_voice": 612.0}, "interrupted": True, "heard": ""})
        except Exception as exc:  # surfaced by the test, not lost in a task
            self.errors.append(repr(exc))
        finally:
            self.script_done.set()


def _check_inbound(frames: list[tuple[float, str]]) -> bytes:
    """Every page message has Twilio's exact shape; returns the caller audio it carried."""
    msgs = [json.loads(raw) for _, raw in frames]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    info = start["start"]
    sid = start["streamSid"]
    assert info["streamSid"] == sid and all(SID.match(info[k]) for k in ("accountSid", "callSid", "streamSid"))
    assert info["tracks"] == ["inbound"]
    assert info["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert isinstance(info["customParameters"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in info["customParameters"].items())
    audio = bytearray()
    chunk, last_ts = 0, None
    for n, msg in enumerate(msgs[1:], start=1):
        assert msg["sequenceNumber"] == str(n), msg  # one counter over all numbered messages, strings
        assert msg["streamSid"] == sid
        if msg["event"] == "media":
            m = msg["media"]
            chunk += 1
            assert m["track"] == "inbound" and m["chunk"] == str(chunk)
            assert isinstance(m["timestamp"], str)
            ts = int(m["timestamp"])
            assert last_ts is None or ts == last_ts + 20  # the media clock: 20 ms a frame
            last_ts = ts
            payload = base64.b64decode(m["payload"], validate=True)
            assert len(payload) == 160
            audio += payload
        elif msg["event"] == "dtmf":
            assert msg["dtmf"] == {"track": "inbound_track", "digit": "5"}
        elif msg["event"] == "mark":
            assert set(msg) == {"event", "sequenceNumber", "streamSid", "mark"}
        elif msg["event"] == "stop":
            assert msg["stop"] == {"accountSid": info["accountSid"], "callSid": info["callSid"]}
        elif n != 1:  # n == 1 is `start`, checked above
            raise AssertionError(f"unexpected event from the page: {msg}")
    assert msgs[-1]["event"] == "stop", "hang-up must end with `stop`"
    assert sum(1 for m in msgs if m["event"] == "dtmf") == 1
    return bytes(audio)


def test_page_speaks_twilio_media_streams(tmp_path: Path) -> None:
    wav = _question_wav(tmp_path / "question.wav", lead_ms=600, trail_ms=1200)
    peer = ScriptedPeer(tmp_path)
    browser = None
    try:
        browser = Browser(fake_audio=wav)
        browser.navigate(peer.url + "/")
        browser.evaluate("document.getElementById('call').click()")
        browser.wait_for("window.softphone.state === 'live'", 20, what="the call to connect")
        assert peer.script_done.wait(30), "the scripted peer's script did not finish"
        assert not peer.errors, peer.errors
        browser.evaluate("document.querySelector('[data-digit=\"5\"]').click()")
        browser.wait_for("window.softphone.transcript().includes('We open at nine.')", 10, what="the transcript")
        text = browser.evaluate("window.softphone.transcript()")
        assert "what time do you open" in text and "interrupted" in text and "Hello, this is the scripted peer." in text
        assert browser.evaluate("document.querySelector('#latency tbody').innerText").count("612") == 1
        stats = browser.evaluate("window.softphone.stats")
        problems = browser.evaluate("window.softphone.problems")
        wait_until(lambda: any('"dtmf"' in raw for _, raw in peer.frames), 5, "the DTMF frame to reach the peer")
        browser.evaluate("document.getElementById('hangup').click()")
        browser.wait_for("window.softphone.state === 'ended'", 10, what="the call to end")
        assert peer.closed.wait(10), "the media socket stayed open after hang-up"
    finally:
        if browser is not None:
            browser.close()
        peer.close()

    # Marks: echoed when the audio before them has played, not when it arrived.
    assert list(peer.echoed) == ["a", "b", "empty", "c", "d"], peer.echoed
    assert 0.8 <= peer.echoed["a"] - peer.sent["a"] <= 4.0, "mark a: 1.0 s of audio"
    assert 1.3 <= peer.echoed["b"] - peer.sent["a"] <= 5.0, "mark b: 1.5 s of audio"
    assert peer.echoed["empty"] - peer.sent["empty"] < 0.5, "a mark with nothing buffered comes back at once"
    for name in ("c", "d"):  # `clear`: pending marks come back at once, their audio unplayed
        assert 0 <= peer.echoed[name] - peer.clear_at < 0.5, (name, peer.echoed[name] - peer.clear_at)
    assert stats["clears"] == 1 and stats["marksCleared"] == 2 and stats["marksPlayed"] == 3, stats
    assert 1.3 <= stats["playedMs"] / 1000 <= 3.5, stats  # 1.5 s + the 0.4 s before the clear, no foreign audio
    assert any("not ours" in p for p in problems), problems

    # Caller audio: Twilio's exact framing, and the fake microphone's words survive 8 kHz mu-law.
    audio = _check_inbound(peer.frames)
    heard = transcribe_mulaw(audio)
    print(f"inbound audio: {len(audio) / 8000:.1f} s; tiny.en hears: {heard!r}")
    assert word_error_rate(QUESTION, heard) <= 0.4, heard


# ---------------------------------------------------------------- 2. end to end against the running system


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_softphone_call_to_the_running_system(tmp_path: Path) -> None:
    # Lead silence covers the greeting, so the question does not barge in on it.
    wav = _question_wav(tmp_path / "question.wav", lead_ms=6000, trail_ms=10000)
    shots = _shots_dir(tmp_path)
    system = RunningSystem(tmp_path)
    browser = None
    try:
        system.wait_ready()
        with urllib.request.urlopen(system.url + "/", timeout=5) as r:
            assert r.status == 200, "the softphone page is not served (add_views not wired?)"
        browser = Browser(fake_audio=wav)
        browser.navigate(system.url + "/")
        browser.evaluate("document.getElementById('call').click()")
        browser.wait_for("window.softphone.state === 'live'", 20, what="the call to connect")
        browser.wait_for("window.softphone.events.some(e => e.kind === 'agent' && e.data.turn === 0)", 15,
                         what="the greeting in the transcript")
        # The answer arrives a sentence at a time: read it once the whole turn was played.
        browser.wait_for("window.softphone.events.some(e => e.kind === 'turn' && e.data.turn >= 1)", 75,
                         what="the answer to be played and its latency reported")
        answer = browser.evaluate(
            "window.softphone.events.filter(e => e.kind === 'agent' && e.data.turn >= 1).map(e => e.data.text).join(' ')")
        print(f"agent answered: {answer!r}")
        assert "saturday" in answer.lower() or "nine" in answer.lower(), answer
        heard = browser.evaluate("window.softphone.events.filter(e => e.kind === 'final').map(e => e.data.text).join(' ')")
        print(f"caller transcript: {heard!r}")
        assert word_error_rate(QUESTION, heard) <= 0.5, heard
        browser.screenshot(shots / "softphone.png")
        stats = browser.evaluate("window.softphone.stats")
        assert stats["playedMs"] > 2000 and stats["marksPlayed"] >= 2, stats  # greeting + answer were heard
        assert browser.evaluate("window.softphone.problems") == []
        call_sid = browser.evaluate("window.softphone.callSid")
        browser.evaluate("document.getElementById('hangup').click()")
        browser.wait_for("window.softphone.state === 'ended'", 10, what="the call to end")

        def ended_call() -> list[dict[str, Any]]:
            data = _get_json(system.url + "/calls.json")
            return [] if data["live"] else [c for c in data["ended"] if c["call_sid"] == call_sid]

        ended = wait_until(ended_call, 15, poll_s=0.3,
                           what=lambda: f"the call to be recorded as ended: {_get_json(system.url + '/calls.json')}")
        agent_turns = [t for t in ended[0]["turns"] if t["role"] == "agent" and t["turn"] >= 1]
        assert agent_turns and agent_turns[0]["segments"], ended[0]
        browser.navigate(system.url + "/calls")
        browser.wait_for(f"document.getElementById('ended').innerText.includes('{call_sid}')", 10, what="/calls")
        # The call's recording plays on /calls: the browser loads and decodes the WAV it links.
        browser.evaluate("document.querySelectorAll('#ended audio.recording').forEach(a => { a.preload = 'metadata'; a.load(); })")
        duration = browser.wait_for(
            "(() => { const a = document.querySelector('#ended audio.recording'); return a && a.duration > 0 ? a.duration : 0; })()",
            10, what="the call's recording to load in its <audio> player")
        assert duration > 2.0, duration
        browser.screenshot(shots / "calls.png")
        print(f"screenshots: {shots / 'softphone.png'}, {shots / 'calls.png'}")
    finally:
        if browser is not None:
            browser.close()
        system.stop()

"""The softphone views on a real aiohttp server: routes, the access rule, the event feed, /calls.json.

The call registry is a stand-in (`tests/call_registry.py`) fed with synthetic events (the real `CallSession`s need workers);
the records are a real SQLite database written by `CallRecords`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from tests.call_registry import StubRegistry, StubSession
from voicecall.config import Config
from voicecall.records import CallRecords
from voicecall.web.call_feed import Subscriber
from voicecall.web.views import TOKEN_COOKIE, add_views, softphone_allowed

TOKEN_ENV = "VOICECALL_SOFTPHONE_TOKEN"
PROXIED = {"X-Forwarded-For": "203.0.113.9"}  # how a non-loopback visitor looks behind a local proxy


def _config(tmp_path: Path, softphone: bool = True) -> Config:
    cfg = Config()
    cfg.server.softphone = softphone
    cfg.records.db_path = str(tmp_path / "calls.db")
    return cfg


async def _plain(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _client(cfg: Config, conv: StubRegistry) -> TestClient:
    app = web.Application()
    add_views(app, conv, cfg)
    app.router.add_get("/plain", _plain)  # stands for the Twilio routes: not the views' guard to judge
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 50000) if name == "peername" else default


@pytest.mark.parametrize(("peer", "headers", "env_token", "softphone", "allowed"), [
    ("127.0.0.1", {"Host": "127.0.0.1:8080"}, "", True, True),
    ("::1", {"Host": "[::1]:8080"}, "", True, True),
    ("127.0.0.1", {"Host": "localhost:8080"}, "", False, False),  # switched off
    ("192.0.2.7", {"Host": "agent.example:8080"}, "", True, False),  # remote, no token configured
    ("192.0.2.7", {"Host": "agent.example:8080", "X-Softphone-Token": "s3cret"}, "", True, False),
    ("192.0.2.7", {"Host": "agent.example:8080", "X-Softphone-Token": "s3cret"}, "s3cret", True, True),
    ("192.0.2.7", {"Host": "agent.example:8080", "Authorization": "Bearer s3cret"}, "s3cret", True, True),
    ("192.0.2.7", {"Host": "agent.example:8080", "Cookie": f"{TOKEN_COOKIE}=s3cret"}, "s3cret", True, True),
    ("192.0.2.7", {"Host": "agent.example:8080", "X-Softphone-Token": "guess"}, "s3cret", True, False),
    ("127.0.0.1", {"Host": "127.0.0.1:8080", **PROXIED}, "", True, False),  # a local proxy relays strangers
    ("127.0.0.1", {"Host": "rebound.example:8080"}, "", True, False),  # DNS rebinding
    ("127.0.0.1", {"Host": "127.0.0.1:8080", "Origin": "http://evil.example"}, "", True, False),  # cross-site
    ("127.0.0.1", {"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080"}, "", True, True),
])
def test_access_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer: str, headers: dict[str, str],
                     env_token: str, softphone: bool, allowed: bool) -> None:
    monkeypatch.setenv(TOKEN_ENV, env_token)
    request = make_mocked_request("GET", "/", headers=headers, transport=_Transport(peer))
    assert softphone_allowed(request, _config(tmp_path, softphone)) is allowed


def test_token_in_query_is_accepted_for_remote_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    request = make_mocked_request("GET", "/?token=s3cret", headers={"Host": "agent.example"},
                                  transport=_Transport("192.0.2.7"))
    assert softphone_allowed(request, _config(tmp_path))


def test_pages_and_static_files_for_loopback(tmp_path: Path) -> None:
    async def main() -> None:
        client = await _client(_config(tmp_path), StubRegistry())
        try:
            r = await client.get("/")
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            page = await r.text()
            assert 'id="call"' in page and "softphone.js" in page
            assert r.headers["Cache-Control"] == "no-cache"
            r = await client.get("/calls")
            assert r.status == 200 and 'id="live"' in await r.text()
            for name in ("softphone.js", "phone-worklet.js", "twilio-stream.js", "mulaw.js", "calls.js", "transcript.js"):
                r = await client.get(f"/static/{name}")
                assert r.status == 200, name
                assert "javascript" in r.headers["Content-Type"], (name, r.headers["Content-Type"])  # worklets need it
                assert r.headers["Cache-Control"] == "no-cache", name
            assert (await client.get("/static/style.css")).status == 200
            assert (await client.get("/static/nothing.js")).status == 404
            assert (await client.get("/static/..%2Fviews.py")).status == 404
            assert (await client.get("/static/")).status in (403, 404)  # no directory listing
        finally:
            await client.close()

    asyncio.run(main())


def test_remote_clients_need_the_token_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")

    async def main() -> None:
        client = await _client(_config(tmp_path), StubRegistry())
        try:
            for path in ("/", "/calls", "/calls.json", "/static/softphone.js"):
                r = await client.get(path, headers=PROXIED)
                assert r.status == 403, path
                assert TOKEN_ENV in await r.text()  # the refusal says how to get in
            assert (await client.get("/plain", headers=PROXIED)).status == 200  # the guard keeps to its routes
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await client.ws_connect("/softphone/events", headers=PROXIED)
            assert exc.value.status == 403
            r = await client.get("/?token=s3cret", headers=PROXIED)
            assert r.status == 200 and TOKEN_COOKIE in r.cookies
            # the cookie carries the token to the scripts, the JSON and the sockets of the page
            assert (await client.get("/static/softphone.js", headers=PROXIED)).status == 200
            assert (await client.get("/calls.json", headers=PROXIED)).status == 200
            ws = await client.ws_connect("/softphone/events", headers=PROXIED)
            assert (await ws.receive_json(timeout=5))["kind"] == "snapshot"
            await ws.close()
            client.session.cookie_jar.clear()
            assert (await client.get("/calls.json?token=wrong", headers=PROXIED)).status == 403
            assert (await client.get("/calls.json", headers={**PROXIED, "X-Softphone-Token": "s3cret"})).status == 200
        finally:
            await client.close()

    asyncio.run(main())


def test_cross_site_socket_and_disabled_softphone_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        client = await _client(_config(tmp_path), StubRegistry())
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await client.ws_connect("/softphone/events", headers={"Origin": "http://evil.example"})
            assert exc.value.status == 403
        finally:
            await client.close()
        client = await _client(_config(tmp_path, softphone=False), StubRegistry())
        try:
            r = await client.get("/")
            assert r.status == 404 and "server.softphone" in await r.text()
            assert (await client.get("/static/style.css")).status == 404
            assert (await client.get("/plain")).status == 200
        finally:
            await client.close()

    asyncio.run(main())


def test_events_follow_one_call_or_all(tmp_path: Path) -> None:
    conv = StubRegistry()
    conv.sessions[1] = StubSession(1, "CA" + "1" * 32)
    conv.sessions[2] = StubSession(2, "CA" + "2" * 32)

    async def main() -> None:
        client = await _client(_config(tmp_path), conv)
        try:
            one = await client.ws_connect(f"/softphone/events?callSid={'CA' + '1' * 32}")
            every = await client.ws_connect("/softphone/events")
            first = await one.receive_json(timeout=5)
            assert first["kind"] == "snapshot" and [c["call_id"] for c in first["data"]["calls"]] == [1]
            assert len((await every.receive_json(timeout=5))["data"]["calls"]) == 2
            script = [(1, "partial", {"text": "what time", "turn": 1}), (2, "final", {"text": "hello", "turn": 1}),
                      (1, "final", {"text": "what time do you open", "turn": 1}),
                      (1, "agent", {"text": "We open at eight.", "turn": 1}),
                      (1, "turn", {"turn": 1, "latency_ms": {"voice_to_voice": 640.0}, "interrupted": False, "heard": ""}),
                      (1, "ended", {"reason": "caller hung up"})]
            for call_id, kind, data in script:
                conv.emit(call_id, kind, data)
            got = [await one.receive_json(timeout=5) for _ in range(5)]
            assert [(e["call_id"], e["kind"]) for e in got] == [(c, k) for c, k, _ in script if c == 1]
            assert got[3]["data"]["latency_ms"]["voice_to_voice"] == 640.0
            assert all(e["call_sid"] == "CA" + "1" * 32 for e in got)
            got_all = [await every.receive_json(timeout=5) for _ in range(6)]
            assert [e["call_id"] for e in got_all] == [1, 2, 1, 1, 1, 1]
            await one.close()
            await every.close()
        finally:
            await client.close()

    asyncio.run(main())


def test_slow_subscriber_keeps_the_newest_events() -> None:
    async def main() -> None:
        sub = Subscriber(None, maxsize=3)
        for i in range(5):
            sub.push({"n": i})
        assert sub.dropped == 2
        assert [sub.queue.get_nowait()["n"] for _ in range(3)] == [2, 3, 4]

    asyncio.run(main())


def _record_ended_call(db: Path) -> None:
    rec = CallRecords(db)
    ids: list[int] = []
    rec.call_started(ids.append, call_sid="CA" + "a" * 32, stream_sid="MZ" + "a" * 32, from_number="softphone")
    row = lambda: ids[0] if ids else None  # noqa: E731
    base, ms = 5_000_000_000, 1_000_000
    stamps = {"speech_start_ns": base - 900 * ms, "speech_end_ns": base, "turn_end_ns": base + 400 * ms,
              "stt_final_ns": base + 450 * ms, "stt_final_recv_ns": base + 451 * ms,
              "llm_first_token_ns": base + 470 * ms, "first_clause_ns": base + 480 * ms,
              "tts_first_audio_ns": base + 560 * ms, "first_media_sent_ns": base + 562 * ms,
              "first_mark_echoed_ns": base + 1500 * ms}
    rec.turn(row, 1, "caller", "What time do you open on Saturday?", stamps=stamps)
    rec.turn(row, 1, "agent", "On Saturdays we open at nine.", heard_text="On Saturdays we open at nine.", stamps=stamps)
    rec.call_ended(row, "caller hung up", barge_ins=0)
    rec.flush()
    rec.close()


def test_calls_json_has_live_calls_and_ended_waterfalls(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    conv = StubRegistry()
    conv.sessions[7] = StubSession(7, "CA" + "7" * 32)

    async def main() -> None:
        client = await _client(cfg, conv)
        try:
            empty = await (await client.get("/calls.json")).json()
            assert empty["ended"] == [] and "calls.db" in empty["records_error"]
            _record_ended_call(Path(cfg.records.db_path))
            data = await (await client.get("/calls.json?limit=5")).json()
            assert [c["call_id"] for c in data["live"]] == [7] and data["live"][0]["state"] == "listening"
            (call,) = data["ended"]
            assert call["end_reason"] == "caller hung up" and call["duration_s"] >= 0
            assert [t["role"] for t in call["turns"]] == ["caller", "agent"]
            agent = call["turns"][1]
            assert agent["text"] == "On Saturdays we open at nine."
            assert agent["latency_ms"]["voice_to_voice"] == 562.0
            stages = [s["stage"] for s in agent["segments"]]
            assert stages[0] == "caller speech" and "STT final" in stages and stages[-1] == "first mark echoed"
            assert (await client.get("/calls.json?limit=lots")).status == 400
        finally:
            await client.close()

    asyncio.run(main())


def test_shutdown_closes_event_sockets_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        client = await _client(_config(tmp_path), StubRegistry())
        ws = await client.ws_connect("/softphone/events")
        await ws.receive_json(timeout=5)
        t0 = time.monotonic()
        closing = asyncio.create_task(client.close())
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        await asyncio.wait_for(closing, 10)
        assert time.monotonic() - t0 < 5.0  # not the 60 s a forgotten socket would cost

    asyncio.run(main())


def test_event_json_is_plain(tmp_path: Path) -> None:
    """What the page gets can be parsed by any JSON reader (no msgspec-only types)."""
    conv = StubRegistry()
    conv.sessions[3] = StubSession(3, "CA" + "3" * 32)

    async def main() -> None:
        client = await _client(_config(tmp_path), conv)
        try:
            ws = await client.ws_connect("/softphone/events")
            await ws.receive_str(timeout=5)
            conv.emit(3, "interrupted", {"turn": 2, "heard": "On Saturdays", "why": "barge-in"})
            event = json.loads(await ws.receive_str(timeout=5))
            assert event["kind"] == "interrupted" and event["data"]["heard"] == "On Saturdays"
            await ws.close()
        finally:
            await client.close()

    asyncio.run(main())

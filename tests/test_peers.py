"""Capacity routing with two real telephony servers: a full box redirects a call to a peer with room.

The simulated caller follows `<Redirect>` as Twilio does (same parameters POSTed to the new URL,
signed for it), then streams to the box that took the call.
"""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET

import aiohttp

from tests.telephony_fixtures import config, running_server
from tests.waiting import wait_until_async
from voicecall.sim.client import SimulatedCall
from voicecall.telephony.app import CALLS, PEERS, set_draining
from voicecall.telephony.peers import has_room


def _dead_peer() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_has_room_reads_healthz() -> None:
    assert has_room({"ready": True, "draining": False, "live_calls": 1, "max_calls": 2})
    assert not has_room({"ready": True, "live_calls": 2, "max_calls": 2})
    assert not has_room({"ready": False, "live_calls": 0, "max_calls": 2})
    assert not has_room({"ready": True, "draining": True, "live_calls": 0, "max_calls": 2})
    assert not has_room({}) and not has_room({"ready": True, "live_calls": "x", "max_calls": 2})


def test_a_full_box_redirects_to_a_peer_with_room_and_says_busy_when_none_has() -> None:
    async def main() -> None:
        async with running_server(config(max_calls=1)) as (url_b, app_b):
            # A knows a dead peer first (skipped), then B.
            async with running_server(config(max_calls=1, peers=[_dead_peer(), url_b], peer_timeout_s=1.0)) as (url_a, app_a):
                async with aiohttp.ClientSession() as http:
                    first = SimulatedCall(url_a, session=http)
                    await first.place()  # A has room: streamed to A
                    assert first.report.redirects == [] and first.stream_url
                    second = SimulatedCall(url_a, session=http)
                    await second.place()  # A is full: redirected to B, which streams it
                    assert second.report.redirects == [f"{url_b}/twilio/voice?redirected=1"]
                    assert second.server == url_b and ET.fromstring(second.report.twiml).find("./Connect/Stream") is not None
                    await second.connect()  # the media stream goes to B
                    await wait_until_async(lambda: app_b[CALLS].streams, 5, "the media stream on box B")
                    assert len(app_b[CALLS].streams) == 1 and app_a[PEERS].redirected == 1
                    async with http.get(url_b + "/healthz") as resp:  # full now, and says who it is
                        body = await resp.json()
                    assert body["live_calls"] == body["max_calls"] == 1 and body["instance"] == socket.gethostname()
                    third = SimulatedCall(url_a, session=http)
                    await third.place()  # both full: busy, no redirect
                    assert third.report.busy and third.report.redirects == [] and "busy" in third.report.twiml
                    await second.close()

    asyncio.run(main())


def test_a_redirected_call_is_not_redirected_again_and_a_draining_box_hands_calls_on() -> None:
    async def main() -> None:
        async with running_server(config(max_calls=1)) as (url_b, app_b):
            async with running_server(config(max_calls=1, peers=[url_b])) as (url_a, app_a):
                # B is full and names A (which has room) as its peer: a call redirected to B stops there.
                app_b[PEERS].peers = [url_a]
                app_b[CALLS].reserve("CAother")
                async with aiohttp.ClientSession() as http:
                    async with http.post(f"{url_b}/twilio/voice?redirected=1", data={"CallSid": "CAx"}) as resp:
                        body = await resp.text()
                    assert "<Redirect" not in body and "<Hangup" in body
                    async with http.post(f"{url_b}/twilio/voice", data={"CallSid": "CAy"}) as resp:
                        assert f"<Redirect method=\"POST\">{url_a}/twilio/voice?redirected=1</Redirect>" in await resp.text()
                    app_b[PEERS].peers = []
                    # A draining box (rolling deploy) sends new calls to a peer with room.
                    app_b[CALLS]._reserved.clear()
                    set_draining(app_a)
                    call = SimulatedCall(url_a, session=http)
                    await call.place()
                    assert call.report.redirects and call.server == url_b and call.stream_url

    asyncio.run(main())


def test_a_redirect_is_signed_by_twilio_for_the_peer_and_checked_there(monkeypatch) -> None:
    """With signatures on, the caller (like Twilio) signs the redirected webhook for the peer's URL."""
    token = "test-auth-token-0123456789abcdef"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", token)

    async def main() -> None:
        async with running_server(config(max_calls=0)) as (url_b, _app_b):  # B full: A must not pick it
            async with running_server(config(max_calls=4)) as (url_c, app_c):
                async with running_server(config(max_calls=0, peers=[url_b, url_c])) as (url_a, _app_a):
                    async with aiohttp.ClientSession() as http:
                        call = SimulatedCall(url_a, auth_token=token, session=http)
                        assert await call.place() == 200
                        assert call.report.redirects == [f"{url_c}/twilio/voice?redirected=1"] and call.stream_url
                        assert app_c[CALLS].accepted == 1
                        forged = SimulatedCall(url_a, auth_token="not-the-token", session=http)
                        assert await forged.place() == 403  # nothing is redirected for an unsigned request

    asyncio.run(main())

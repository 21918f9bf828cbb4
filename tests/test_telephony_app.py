"""The HTTP side on a real socket: TwiML, call limits, /healthz, Twilio signatures, the bind rule."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from twilio.request_validator import RequestValidator
from websockets.exceptions import InvalidStatus

from tests.telephony_fixtures import config, running_server
from voicecall.config import ServerConfig
from voicecall.sim.client import SimulatedCall
from voicecall.telephony.app import set_draining
from voicecall.twilio.security import UnsafeBindError, check_bind

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://agent.example.com"


def test_twiml_streams_to_public_wss_url_with_parameters() -> None:
    async def main() -> None:
        async with running_server(config(public_url=PUBLIC)) as (url, _):
            call = SimulatedCall(url, public_url=PUBLIC)
            assert await call.place() == 200
            root = ET.fromstring(call.report.twiml)
            stream = root.find("./Connect/Stream")
            assert stream is not None
            assert stream.get("url") == "wss://agent.example.com/twilio/media"  # no port, no query
            assert stream.get("statusCallback") == PUBLIC + "/twilio/status"
            assert call.report.parameters["From"] == call.from_number
            assert call.report.parameters["CallSid"] == call.call_sid
            assert call.local_ws_url() == url.replace("http", "ws") + "/twilio/media"

    asyncio.run(main())


def _busy(twiml: str) -> bool:
    root = ET.fromstring(twiml)
    return root.find("Say") is not None and root.find("Hangup") is not None and root.find("Connect") is None


def test_busy_when_full_not_ready_or_draining() -> None:
    ready = {"ready": True}

    async def main() -> None:
        async with running_server(config(max_calls=2), readiness=lambda: ready) as (url, app):
            async with aiohttp.ClientSession() as http:
                first, second, third = (SimulatedCall(url, session=http) for _ in range(3))
                await first.place()
                await second.place()
                await third.place()  # two reserved by webhooks already
                assert not _busy(first.report.twiml) and _busy(third.report.twiml)
                assert "busy" in third.report.twiml
                async with http.get(url + "/healthz") as resp:
                    body = await resp.json()
                    assert resp.status == 200 and body["live_calls"] == 2 and body["max_calls"] == 2
        async with running_server(config(), readiness=lambda: ready) as (url, app):
            async with aiohttp.ClientSession() as http:
                ready["ready"] = False
                call = SimulatedCall(url, session=http)
                await call.place()
                assert _busy(call.report.twiml)
                async with http.get(url + "/healthz") as resp:
                    assert resp.status == 503 and (await resp.json())["ready"] is False
                ready["ready"] = True
                set_draining(app)
                call = SimulatedCall(url, session=http)
                await call.place()
                assert _busy(call.report.twiml)
                async with http.get(url + "/healthz") as resp:
                    assert resp.status == 503 and (await resp.json())["draining"] is True

    asyncio.run(main())


def test_signed_webhooks_and_upgrade(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)

    async def main() -> None:
        async with running_server(config(public_url=PUBLIC)) as (url, _):
            good = SimulatedCall(url, public_url=PUBLIC, auth_token=TOKEN)
            assert await good.place() == 200
            await good.connect()  # upgrade signed over wss://agent.example.com/twilio/media
            await good.stop()
            await good.close()
            assert good.report.closed_by.startswith("server")

            # signed by the twilio library directly, independent of the simulator
            validator = RequestValidator(TOKEN)
            params = {"CallSid": "CA" + "1" * 32, "From": "+15550001111"}
            signature = validator.compute_signature(PUBLIC + "/twilio/status", params)
            async with aiohttp.ClientSession() as http:
                async with http.post(url + "/twilio/status", data=params,
                                     headers={"X-Twilio-Signature": signature}) as resp:
                    assert resp.status == 204
                async with http.post(url + "/twilio/status", data={**params, "From": "+1999"},
                                     headers={"X-Twilio-Signature": signature}) as resp:
                    assert resp.status == 403
                async with http.post(url + "/twilio/voice", data=params) as resp:
                    assert resp.status == 403  # no signature at all

            wrong = SimulatedCall(url, public_url=PUBLIC, auth_token="not-the-token")
            assert await wrong.place() == 403
            wrong.stream_url = "wss://agent.example.com/twilio/media"
            with pytest.raises(InvalidStatus) as info:
                await wrong.connect()
            assert info.value.response.status_code == 403
            # https:// instead of wss:// is a different URL: Twilio signs the wss one
            https_sig = validator.compute_signature("https://agent.example.com/twilio/media", {})
            other = SimulatedCall(url, public_url=PUBLIC)
            with pytest.raises(InvalidStatus):
                await other.connect(headers={"x-twilio-signature": https_sig})

    asyncio.run(main())


def test_token_never_logged_on_rejection(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)

    async def main() -> None:
        async with running_server(config()) as (url, _):
            assert await SimulatedCall(url, auth_token="wrong").place() == 403

    asyncio.run(main())
    assert "X-Twilio-Signature" in caplog.text and TOKEN not in caplog.text


def test_unsigned_server_stays_on_loopback() -> None:
    check_bind(ServerConfig(host="127.0.0.1"), {})
    check_bind(ServerConfig(host="::1"), {})
    check_bind(ServerConfig(host="0.0.0.0"), {"TWILIO_AUTH_TOKEN": TOKEN})
    check_bind(ServerConfig(host="0.0.0.0", allow_unsigned=True), {})
    with pytest.raises(UnsafeBindError, match="allow_unsigned"):
        check_bind(ServerConfig(host="0.0.0.0"), {})

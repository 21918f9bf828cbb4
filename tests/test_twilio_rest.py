"""The Twilio REST client against the scripted cloud: wire format, once-only POSTs, errors, secrets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from voicecall.config import TwilioConfig, config_from_toml
from voicecall.sim.twilio_cloud import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioCloud
from voicecall.twilio.hangup import complete_call
from voicecall.twilio.rest import TwilioCredentials, TwilioNotConfigured, TwilioRest, TwilioRestError

CALL = "CA" + "1" * 32


def with_cloud(body: Callable[[TwilioCloud, TwilioRest], Awaitable[Any]], **cfg: Any) -> Any:
    async def main() -> Any:
        cloud = TwilioCloud()
        base = await cloud.start()
        rest = TwilioRest(TwilioConfig(api_base_url=base, **cfg), TwilioCredentials(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN))
        try:
            return await body(cloud, rest)
        finally:
            await rest.close()
            await cloud.stop()

    return asyncio.run(main())


def test_hang_up_posts_status_completed_once() -> None:
    async def body(cloud: TwilioCloud, rest: TwilioRest) -> None:
        results = await asyncio.gather(rest.hang_up(CALL), rest.hang_up(CALL), complete_call(rest, CALL))
        assert results == [True, True, True]
        (req,) = cloud.updates(CALL)
        assert req.path == f"/2010-04-01/Accounts/{TEST_ACCOUNT_SID}/Calls/{CALL}.json"
        assert req.authorized and req.form == {"Status": ["completed"]}
        assert cloud.calls[CALL].status == "completed"

    with_cloud(body)


def test_transfer_posts_dial_twiml_once() -> None:
    async def body(cloud: TwilioCloud, rest: TwilioRest) -> None:
        first, second = await asyncio.gather(rest.transfer(CALL, "+15551230000"), rest.transfer(CALL, "+15551230000"))
        assert first.sid == second.sid == CALL
        (req,) = cloud.updates(CALL)
        twiml = req.field("Twiml")
        assert '<Dial callerId="+15550001111">+15551230000</Dial>' in twiml and twiml.startswith("<?xml")
        with pytest.raises(TwilioRestError, match="E.164"):
            await rest.transfer("CA" + "2" * 32, "555-1234")
        assert len(cloud.requests) == 1  # a bad number never reaches Twilio

    with_cloud(body, caller_id="+15550001111")


def test_errors_carry_twilio_code_and_never_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def body(cloud: TwilioCloud, rest: TwilioRest) -> None:
        cloud.fail_next(500, 20500, "Internal Server Error")
        with pytest.raises(TwilioRestError) as err:
            await rest.transfer(CALL, "+15551230000")
        assert (err.value.status, err.value.code, err.value.message) == (500, 20500, "Internal Server Error")
        await rest.transfer(CALL, "+15551230000")  # refused, so asking again posts again (and works)
        await rest.transfer(CALL, "+15551230000")  # ... once
        assert len(cloud.updates(CALL)) == 2
        cloud.fail_next(404, 20404, "The requested resource was not found")
        assert await rest.hang_up(CALL)  # already gone counts as hung up
        other = "CA" + "3" * 32
        cloud.fail_next(429, 20429, "Too Many Requests")
        assert not await complete_call(rest, other)

    with_cloud(body)
    text = caplog.text + repr([r.args for r in caplog.records])
    assert "20500" in text and "20429" in text
    assert TEST_AUTH_TOKEN not in text


def test_wrong_token_is_a_401_with_code() -> None:
    async def main() -> None:
        cloud = TwilioCloud()
        base = await cloud.start()
        rest = TwilioRest(TwilioConfig(api_base_url=base), TwilioCredentials(TEST_ACCOUNT_SID, "wrong"))
        try:
            with pytest.raises(TwilioRestError) as err:
                await rest.update_call(CALL, "redirect", {"Url": "https://example.com/x"})
            assert (err.value.status, err.value.code) == (401, 20003)
        finally:
            await rest.close()
            await cloud.stop()

    asyncio.run(main())


def test_timeout_is_not_retried() -> None:
    async def body(cloud: TwilioCloud, rest: TwilioRest) -> None:
        cloud.delay_next(3.0)
        with pytest.raises(TwilioRestError) as err:
            await rest.update_call(CALL, "hang-up", {"Status": "completed"})
        assert err.value.status is None and "no answer" in str(err.value)
        assert not await rest.hang_up(CALL)  # the outcome is unknown: remembered, not re-posted
        assert len(cloud.updates(CALL)) == 1

    with_cloud(body, request_timeout_s=0.5)


def test_without_credentials_nothing_is_posted() -> None:
    cfg = TwilioConfig(account_sid_env="VC_TEST_NO_SID", auth_token_env="VC_TEST_NO_TOKEN")
    assert TwilioCredentials.from_env(cfg, {"VC_TEST_NO_SID": "AC1"}) is None
    creds = TwilioCredentials.from_env(cfg, {"VC_TEST_NO_SID": "AC1", "VC_TEST_NO_TOKEN": "secret"})
    assert creds is not None and "secret" not in repr(creds)

    async def main() -> None:
        rest = TwilioRest.from_config(cfg, {})
        assert not rest.configured
        assert not await complete_call(rest, CALL)
        with pytest.raises(TwilioNotConfigured, match="VC_TEST_NO_SID"):
            await rest.transfer(CALL, "+15551230000")
        await rest.close()

    asyncio.run(main())


def test_create_call_then_signed_callbacks() -> None:
    received: list[tuple[str, dict[str, str], bool]] = []

    async def hook(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        valid = RequestValidator(TEST_AUTH_TOKEN).validate(str(request.url), form,
                                                           request.headers.get("X-Twilio-Signature", ""))
        received.append((request.path, form, valid))
        return web.Response(status=204)

    async def body(cloud: TwilioCloud, rest: TwilioRest) -> None:
        app = web.Application()
        app.router.add_post("/status", hook)
        app.router.add_post("/amd", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ours = f"http://127.0.0.1:{port}"
        try:
            kwargs: dict[str, Any] = dict(url=f"{ours}/voice", status_callback=f"{ours}/status",
                                          status_callback_events=["initiated", "answered", "completed"],
                                          machine_detection="Enable", async_amd=True,
                                          async_amd_status_callback=f"{ours}/amd", key="campaign-7/row-1")
            call, again = await asyncio.gather(rest.create_call("+15557654321", **kwargs),
                                               rest.create_call("+15557654321", **kwargs))
            assert call.sid == again.sid and call.sid.startswith("CA") and call.status == "queued"
            assert call.from_ == "+15550001111" and call.direction == "outbound-api"
            (req,) = [r for r in cloud.requests if r.path.endswith("/Calls.json")]
            assert req.form["StatusCallbackEvent"] == ["initiated", "answered", "completed"]
            assert (req.field("MachineDetection"), req.field("AsyncAmd")) == ("Enable", "true")
            assert await cloud.send_status(call.sid, "in-progress") == 204
            assert await cloud.send_amd(call.sid, "human") == 204
        finally:
            await runner.cleanup()
        assert [(p, f.get("CallStatus") or f.get("AnsweredBy"), v) for p, f, v in received] == [
            ("/status", "in-progress", True), ("/amd", "human", True)]

        no_from = TwilioRest(TwilioConfig(api_base_url=cloud.base_url), TwilioCredentials(TEST_ACCOUNT_SID, TEST_AUTH_TOKEN))
        with pytest.raises(TwilioRestError) as err:  # no From anywhere: Twilio's 21213
            await no_from.create_call("+15557654321", url="https://example.com/voice")
        await no_from.close()
        assert err.value.code == 21213

    with_cloud(body, caller_id="+15550001111")


def test_config_twilio_section_and_deprecated_server_keys(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config_from_toml('[twilio]\napi_base_url = "http://127.0.0.1:9"\ncaller_id = "+15550001111"\n')
    assert cfg.twilio.api_base_url == "http://127.0.0.1:9" and cfg.twilio.caller_id == "+15550001111"
    with caplog.at_level(logging.WARNING, "voicecall.config"):
        old = config_from_toml('[server]\nauth_token_env = "MY_TOKEN"\naccount_sid_env = "MY_SID"\n')
    assert (old.twilio.auth_token_env, old.twilio.account_sid_env) == ("MY_TOKEN", "MY_SID")
    assert old.server.auth_token_env == "MY_TOKEN"  # signature checks read the same value
    assert "deprecated" in caplog.text
    from voicecall.config import ConfigError

    with pytest.raises(ConfigError, match=r"\$\.twilio\.caller_id"):
        config_from_toml('[twilio]\ncaller_id = "555-1234"\n')

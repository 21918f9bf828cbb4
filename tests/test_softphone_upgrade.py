"""With a Twilio token set, unsigned Media Stream upgrades are the browser softphone's: allowed
from loopback (or with the softphone token) only; anything proxied must carry Twilio's signature."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from tests.telephony_fixtures import config, running_server
from voicecall.sim.client import SimulatedCall

TOKEN = "f" * 32
PUBLIC = "https://agent.example.com"


def test_unsigned_upgrade_allowed_for_loopback_softphone_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)

    async def main() -> None:
        async with running_server(config(public_url=PUBLIC)) as (url, _):
            browser = SimulatedCall(url, public_url=PUBLIC)
            await browser.connect()  # no X-Twilio-Signature, straight from loopback
            await browser.stop()
            await browser.close()
            assert not browser.report.protocol_errors

            proxied = SimulatedCall(url, public_url=PUBLIC)  # a tunnel forwarding someone else's request
            with pytest.raises(InvalidStatus) as info:
                await proxied.connect(headers={"X-Forwarded-For": "203.0.113.9"})
            assert info.value.response.status_code == 403

        async with running_server(config(public_url=PUBLIC, softphone=False)) as (url, _):
            off = SimulatedCall(url, public_url=PUBLIC)
            with pytest.raises(InvalidStatus):
                await off.connect()

    asyncio.run(main())

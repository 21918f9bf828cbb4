"""/api/calls on a real server: bearer auth, input validation, and the create-call request Twilio gets."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.telephony_fixtures import running_server
from voicecall.agents import AgentConfig, AgentDirectory
from voicecall.config import Config, ServerConfig
from voicecall.outbound import OutboundCalls
from voicecall.web.api import ApiDeps, add_api

TOKEN = "s3cret-api-token"
ENV = {"VOICECALL_API_TOKEN": TOKEN}


def _config() -> Config:
    return Config(server=ServerConfig(public_url="https://agent.example.com"),
                  agents=[AgentConfig(name="desk", default=True), AgentConfig(name="reminders")])


def _deps(cfg: Config, place_call: Any = None) -> ApiDeps:
    return ApiDeps(cfg=cfg, agents=AgentDirectory(cfg), outbound=OutboundCalls(), records=None,
                   place_call=place_call, caller_id="+15550109999", why_no_dialer="no Twilio credentials")


async def _request(base: str, method: str, path: str, headers: dict[str, str] | None = None,
                   **kw: Any) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.request(method, base + path, headers=headers or {}, **kw) as r:
        return r.status, await r.json(content_type=None)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("env", [{}, {"VOICECALL_API_TOKEN": ""}])
def test_without_a_configured_token_the_api_is_off(env: dict[str, str]) -> None:
    async def main() -> None:
        cfg = _config()
        async with running_server(cfg, setup=lambda app: add_api(app, _deps(cfg), environ=env)) as (base, _app):
            for method, path in (("POST", "/api/calls"), ("GET", "/api/calls"), ("GET", "/api/calls/CA1")):
                status, body = await _request(base, method, path, _bearer("anything"), json={"to": "+15550100100"})
                assert status == 403 and "VOICECALL_API_TOKEN" in body["error"], (method, path, status, body)

    asyncio.run(main())


def test_auth_none_wrong_right_and_bad_numbers() -> None:
    async def main() -> None:
        cfg = _config()
        async with running_server(cfg, setup=lambda app: add_api(app, _deps(cfg), environ=ENV)) as (base, _app):
            call = {"to": "+15550100100"}
            assert (await _request(base, "POST", "/api/calls", json=call))[0] == 401
            assert (await _request(base, "POST", "/api/calls", {"Authorization": "Basic " + TOKEN}, json=call))[0] == 403
            assert (await _request(base, "POST", "/api/calls", _bearer(TOKEN + "x"), json=call))[0] == 403
            assert (await _request(base, "GET", "/api/calls"))[0] == 401
            assert (await _request(base, "GET", "/api/calls", _bearer("nope")))[0] == 403
            status, body = await _request(base, "GET", "/api/calls", _bearer(TOKEN))
            assert status == 200 and body == {"calls": []}
            for bad in ("5550100100", "+1 555 010 0100", "+0123", "", None, 15550100100, "+1555010010012345"):
                status, body = await _request(base, "POST", "/api/calls", _bearer(TOKEN), json={"to": bad})
                assert status == 400 and "E.164" in body["error"], (bad, status, body)
            status, body = await _request(base, "POST", "/api/calls", _bearer(TOKEN), data="{not json")
            assert status == 400 and "JSON" in body["error"]
            status, body = await _request(base, "POST", "/api/calls", _bearer(TOKEN), json={**call, "agent": "sales"})
            assert status == 400 and "'sales'" in body["error"] and "reminders" in body["error"]
            status, body = await _request(base, "POST", "/api/calls", _bearer(TOKEN), json={**call, "context": [1]})
            assert status == 400 and "context" in body["error"]
            # Valid, but nothing to place it with: said plainly, not a crash.
            status, body = await _request(base, "POST", "/api/calls", _bearer(TOKEN), json={**call, "agent": "reminders"})
            assert status == 503 and "credentials" in body["error"]

    asyncio.run(main())

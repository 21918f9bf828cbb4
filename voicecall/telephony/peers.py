"""Capacity routing: a box that cannot take a call sends it to a peer box that can.

    POST /twilio/voice on a full (or starting, or draining) box
        -> GET <peer>/healthz of every `server.peers` entry at once (server.peer_timeout_s)
        -> the first peer, in config order, that is ready with live_calls < max_calls:
               <Response><Redirect method="POST">PEER/twilio/voice?redirected=1</Redirect></Response>
           Twilio then asks that box (signing for its URL); none: the busy message as before.

A redirected webhook is never redirected again (`redirected=1`), so two full boxes cannot send
a call back and forth; the peer answers it or says it is busy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("voicecall.telephony")

#: Query parameter that marks a webhook Twilio got from a peer's <Redirect>.
REDIRECTED_PARAM = "redirected"


def has_room(health: dict[str, Any]) -> bool:
    """A peer's /healthz body says it would take one more call."""
    try:
        return bool(health.get("ready")) and not health.get("draining") and int(health["live_calls"]) < int(health["max_calls"])
    except (KeyError, TypeError, ValueError):
        return False


class PeerRouter:
    """Asks the configured peers for room; owns one HTTP session (opened and closed with the app)."""

    def __init__(self, peers: list[str], timeout_s: float) -> None:
        self.peers = [p.rstrip("/") for p in peers]
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.redirected = 0

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _health(self, peer: str) -> dict[str, Any]:
        assert self._session is not None
        try:
            async with self._session.get(peer + "/healthz") as resp:  # 503 still carries the JSON body
                body = await resp.json(content_type=None)
                return body if isinstance(body, dict) else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("peer %s: no usable /healthz (%s)", peer, type(exc).__name__)
            return {}

    async def find_room(self) -> str | None:
        """The base URL of the first peer (config order) with room, or None."""
        if not self.peers or self._session is None:
            return None
        healths = await asyncio.gather(*(self._health(p) for p in self.peers))
        for peer, health in zip(self.peers, healths, strict=True):
            if has_room(health):
                return peer
        return None


async def peer_router_ctx(router: PeerRouter) -> AsyncIterator[None]:
    await router.open()
    yield
    await router.close()


class RedirectCollector(Collector):
    """`voicecall_calls_redirected_total`: calls this box handed to a peer (read at scrape time)."""

    def __init__(self, router: PeerRouter) -> None:
        self.router = router

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("voicecall_calls_redirected", "Calls redirected to a peer with room (server.peers)",
                                  value=self.router.redirected)

"""Run a simulated cloud (an asyncio server) on a thread of its own, for synchronous tests.

    with BackgroundLoop() as bg:
        cloud = TwilioCloud()
        bg.run(cloud.start())          # any coroutine, run on the background loop
        ...
        bg.run(cloud.stop())
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """An event loop on a daemon thread; `run` waits for a coroutine's result; `close` stops it."""

    def __init__(self, name: str = "sim-cloud") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def __enter__(self) -> BackgroundLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    """Start an aiohttp `app` (port 0: any free port): its runner (cleanup() stops it) and base URL."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]  # port 0 -> the real one
    return runner, f"http://{host}:{bound[1]}"

"""The LLM worker's one asyncio loop, on a thread the worker owns (created in load, stopped in shutdown).

Every backend runs on it (vLLM's AsyncLLM and aiohttp want one loop); the serve loop reaches it
only through `soon` (call_soon_threadsafe) and `call` (run a coroutine, wait with a deadline).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("voicecall.llm")

T = TypeVar("T")


class LoopThread:
    """An event loop running forever on its own named thread until `stop`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the loop, from any thread (never blocks)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float, what: str) -> T:
        """Run `coro` on the loop and wait for its result; TimeoutError names `what`."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"llm: {what} did not finish within {timeout_s:.1f} s") from None

    def stop(self, deadline_s: float) -> None:
        """Cancel what still runs on the loop, stop it and join the thread (idempotent)."""
        if not self._thread.is_alive():
            return
        try:
            self.call(_cancel_all(), max(0.1, deadline_s), "cancelling loop tasks")
        except (TimeoutError, RuntimeError) as exc:
            log.warning("llm loop: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(max(0.1, deadline_s))
        if self._thread.is_alive():
            log.warning("llm loop thread still running at the stop deadline")


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=2.0)

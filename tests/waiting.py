"""Waiting in tests: poll a condition until it holds, or fail saying what never happened.

Tests synchronise on what they can observe (a log line, a record, a counter), never on a fixed
sleep: a sleep is too short on a loaded machine and wasted time on an idle one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: What a timeout says was awaited: text, or a function giving it (e.g. with a log tail) at the time.
What = str | Callable[[], str]


def wait_until(predicate: Callable[[], T], timeout_s: float, what: What, poll_s: float = 0.05) -> T:
    """Call `predicate` every `poll_s` until it returns something truthy, and return that.

    Raises AssertionError naming `what` after `timeout_s` seconds. An exception from `predicate`
    (a process that died while we waited) propagates at once. `poll_s` may be 0 for a predicate
    that blocks by itself.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout_s, what))
        time.sleep(poll_s)


async def wait_until_async(predicate: Callable[[], T], timeout_s: float, what: What, poll_s: float = 0.02) -> T:
    """`wait_until` for a test running on an event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout_s, what))
        await asyncio.sleep(poll_s)


def _timed_out(timeout_s: float, what: What) -> str:
    return f"waited {timeout_s:g} s for {what() if callable(what) else what}"

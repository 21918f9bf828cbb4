"""Finding our processes: every test that starts a system checks none outlives it."""

from __future__ import annotations

import time

import psutil

from voicecall.sim.system import alive, descendants

__all__ = ["alive", "assert_all_exited", "descendants"]


def assert_all_exited(pids: set[int], context: str = "", grace_s: float = 10.0) -> None:
    """Every pid in `pids` is gone (or a zombie) within `grace_s`; stragglers are killed, then reported."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    for pid in left:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"orphaned processes after exit: {left}\n{context}"

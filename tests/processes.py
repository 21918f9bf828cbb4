"""Finding our processes: every test that starts a system checks none outlives it."""

from __future__ import annotations

import time

import psutil


def descendants(root_pid: int) -> set[int]:
    """Pids whose parent chain leads to `root_pid`."""
    try:
        return {child.pid for child in psutil.Process(root_pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


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

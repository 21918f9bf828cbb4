"""Segment ownership: creator unlinks, attachers never touch the resource tracker, leaks are caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from multiprocessing import resource_tracker
from pathlib import Path

import pytest

from ipc.shm import (
    SEGMENT_PREFIX,
    attach_segment,
    create_segment,
    leftover_segments,
    new_segment_name,
    unlink_segment,
)

REPO = Path(__file__).resolve().parents[1]


def test_create_attach_unlink() -> None:
    name = new_segment_name("shmtest")
    assert name.startswith(SEGMENT_PREFIX) and "shmtest" in name
    owner = create_segment(name, 4096)
    try:
        owner.buf[:5] = b"hello"
        peer = attach_segment(name)
        assert bytes(peer.buf[:5]) == b"hello"
        peer.close()
        assert name in leftover_segments()
    finally:
        owner.close()
        assert unlink_segment(name) is True
    assert unlink_segment(name) is False  # idempotent
    assert name not in leftover_segments()


def test_attach_leaves_no_registration_with_the_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    live: dict[str, int] = {}

    def register(name: str, rtype: str) -> None:
        live[name] = live.get(name, 0) + 1

    def unregister(name: str, rtype: str) -> None:
        live[name] = live.get(name, 0) - 1

    monkeypatch.setattr(resource_tracker, "register", register)
    monkeypatch.setattr(resource_tracker, "unregister", unregister)
    name = new_segment_name("tracker")
    owner = create_segment(name, 4096)
    peer = attach_segment(name)
    peer.close()
    owner.close()
    unlink_segment(name)
    assert live and all(count == 0 for count in live.values()), live


LEAKY_TEST = '''
from ipc.shm import create_segment, new_segment_name


def test_forgets_to_unlink():
    create_segment(new_segment_name("leaky"), 4096).close()
'''


def test_the_leak_fixture_fails_a_leaking_test_and_cleans_up(tmp_path: Path) -> None:
    """Run the suite's real conftest on a test that leaks a segment, in a fresh pytest."""
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_leaky.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "test leaked shared-memory segments" in proc.stdout and "leaky" in proc.stdout
    assert not [n for n in leftover_segments() if "_leaky_" in n]  # the fixture also removed what it found


def test_segments_of_a_dead_creator_are_unlinked_and_live_ones_kept() -> None:
    import os

    from ipc.shm import unlink_orphaned_segments

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = f"{SEGMENT_PREFIX}{dead.pid}_test_orphan"
    alive = f"{SEGMENT_PREFIX}{os.getppid()}_test_alive"  # our parent is alive: not ours to judge
    for name in (orphan, alive):
        create_segment(name, 64).close()
    try:
        removed = unlink_orphaned_segments()
        assert orphan in removed and alive not in removed
        assert orphan not in leftover_segments() and alive in leftover_segments()
    finally:
        unlink_segment(orphan)
        unlink_segment(alive)

"""Suite-wide fixtures: every test must leave no shared-memory segment and no child process."""

from __future__ import annotations

import os
import random
import time

import pytest

from ipc.shm import leftover_segments, unlink_segment


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Fail any test that leaves a `/dev/shm/vc_*` segment behind (and clean it up)."""
    before = set(leftover_segments())
    yield
    deadline = time.monotonic() + 2.0
    leaked = set(leftover_segments()) - before
    while leaked and time.monotonic() < deadline:  # an owner in a child may be finishing its exit
        time.sleep(0.05)
        leaked = set(leftover_segments()) - before
    for name in leaked:
        unlink_segment(name)
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"


@pytest.fixture
def seed(request) -> int:
    """A random seed, printed so a failure can be replayed with VOICECALL_SEED."""
    value = int(os.environ.get("VOICECALL_SEED", random.randrange(1 << 31)))
    print(f"\n[{request.node.name}] seed={value} (replay: VOICECALL_SEED={value})")
    return value

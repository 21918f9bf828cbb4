"""Shared-memory segment ownership: the creator unlinks, attachers never touch the resource tracker.

Python 3.11 registers *attached* segments with the resource tracker too, which then unlinks
them (or warns about "leaked" ones) when the attaching process exits. We bypass the tracker
entirely and make ownership explicit: `create_segment` is called by the owner (the
supervisor, or a test), which also unlinks; `attach_segment` maps without registering.
"""

from __future__ import annotations

import os
import secrets
from multiprocessing import resource_tracker, shared_memory

#: Every segment voicecall creates starts with this; tests assert none outlives them.
SEGMENT_PREFIX = "vc_"


def new_segment_name(label: str) -> str:
    """A unique, recognisable segment name (`vc_<pid>_<label>_<random>`)."""
    return f"{SEGMENT_PREFIX}{os.getpid()}_{label}_{secrets.token_hex(3)}"


def _untrack(shm: shared_memory.SharedMemory) -> None:
    # SharedMemory.__init__ registered it; we own cleanup ourselves (see module docstring).
    try:
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - tracker may not be running; nothing to undo then
        pass


def create_segment(name: str, size: int) -> shared_memory.SharedMemory:
    """Create and zero a segment; the caller owns it and must `unlink_segment` it."""
    shm = shared_memory.SharedMemory(name=name, create=True, size=size)
    _untrack(shm)
    return shm


def attach_segment(name: str) -> shared_memory.SharedMemory:
    """Map an existing segment without registering it for cleanup in this process."""
    shm = shared_memory.SharedMemory(name=name, create=False)
    _untrack(shm)
    return shm


def unlink_segment(name: str) -> bool:
    """Remove a segment by name; True if it existed. Safe to call twice."""
    try:
        os.unlink(f"/dev/shm/{name.lstrip('/')}")
        return True
    except FileNotFoundError:
        return False


def leftover_segments(prefix: str = SEGMENT_PREFIX) -> list[str]:
    """Names of segments in /dev/shm that start with `prefix` (leak detection)."""
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def semaphores_of(pid: int) -> list[str]:
    """Named POSIX semaphores left in /dev/shm under a process's pid: joblib's loky (under the
    stt/llm models' libraries) names them `sem.loky-<pid>-*` and unlinks them at exit, which a
    SIGKILL skips."""
    return leftover_segments(f"sem.loky-{pid}-")


def creator_pid(name: str) -> int:
    """The pid in `vc_<pid>_<label>_<random>`, or -1 for a name of another shape."""
    try:
        return int(name[len(SEGMENT_PREFIX):].split("_", 1)[0])
    except ValueError:
        return -1


def unlink_orphaned_segments(prefix: str = SEGMENT_PREFIX) -> list[str]:
    """Unlink segments whose creator process is gone (a supervisor killed with SIGKILL).

    Only the creator unlinks; when it was killed, nobody would. A live creator's segments
    (another voicecall on this machine) are left alone.
    """
    removed = []
    for name in leftover_segments(prefix):
        pid = creator_pid(name)
        if pid <= 0 or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if unlink_segment(name):
                removed.append(name)
        except PermissionError:
            continue  # alive, someone else's
    return removed

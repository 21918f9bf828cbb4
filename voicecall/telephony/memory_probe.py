"""`/debug/memory`: what the telephony process keeps, for finding per-call growth.

Telephony holds every call, so anything a call leaves behind shows up here. Two views:
live objects counted by type (always), and tracemalloc's allocation sites when the process
was started with `VOICECALL_TRACEMALLOC=<frames>` (it costs ~30% CPU in telephony, so it is
never on by default), and glibc's account of the C heap, where growth outside Python shows.
`?mark=1` stores a baseline; later reads show the growth since it. Both walk the heap on the
event loop (tens of ms; `?malloc=1` reads the C heap alone, in microseconds): a debugging tool,
loopback clients only.
"""

from __future__ import annotations

import ctypes
import gc
import os
import tracemalloc
from collections import Counter
from typing import Any

ENV = "VOICECALL_TRACEMALLOC"


def start_tracing_if_asked() -> bool:
    """Start tracemalloc when `VOICECALL_TRACEMALLOC` names a frame depth (e.g. 1 or 8)."""
    depth = os.environ.get(ENV, "").strip()
    if not depth:
        return False
    try:
        frames = max(1, int(depth))
    except ValueError:
        raise ValueError(f"{ENV}={depth!r}: expected a number of frames, e.g. 1 or 8") from None
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    return True


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_stats() -> dict[str, float] | None:
    """glibc's own account of the C heap (MB): in use, free but kept, and large mmap'd blocks.
    Growth "in use" is native memory held (a C library's caches, or a leak); growth "free" is
    fragmentation. None where glibc's mallinfo2 is missing (musl, macOS, glibc < 2.33)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    info = fn()
    mb = 2**20
    return {"in_use_mb": round(info.uordblks / mb, 2), "free_kept_mb": round(info.fordblks / mb, 2),
            "mmapped_mb": round(info.hblkhd / mb, 2), "arena_mb": round(info.arena / mb, 2)}


def object_counts() -> Counter[str]:
    """Live gc-tracked objects by qualified type name."""
    gc.collect()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
    return counts


class MemoryProbe:
    """Baseline and growth of telephony's heap: object counts by type and tracemalloc sites."""

    _SKIP = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<unknown>")

    def __init__(self) -> None:
        self._counts: Counter[str] | None = None
        self._snapshot: tracemalloc.Snapshot | None = None

    def _take(self) -> tracemalloc.Snapshot | None:
        if not tracemalloc.is_tracing():
            return None
        snap = tracemalloc.take_snapshot()
        return snap.filter_traces([tracemalloc.Filter(False, path) for path in self._SKIP])

    def mark(self) -> None:
        """Remember the heap as it is now; later reports show growth from here."""
        self._counts = object_counts()
        self._snapshot = self._take()

    def report(self, top: int = 25, malloc_only: bool = False) -> dict[str, Any]:
        """Largest object-count growth by type and allocation growth by source line since the mark
        (absolute figures when no mark was made), and the C heap; `malloc_only`: the C heap alone
        (cheap: no heap walk)."""
        if malloc_only:
            return {"malloc": malloc_stats()}
        counts = object_counts()
        base = self._counts or Counter()
        grew = sorted(((name, n - base.get(name, 0), n) for name, n in counts.items()), key=lambda t: -t[1])[:top]
        out: dict[str, Any] = {
            "marked": self._counts is not None,
            "objects": sum(counts.values()),
            "objects_at_mark": sum(base.values()) if self._counts is not None else None,
            "types": [{"type": name, "growth": d, "count": n} for name, d, n in grew],
            "tracing": tracemalloc.is_tracing(),
            "malloc": malloc_stats(),
        }
        snap = self._take()
        if snap is None:
            return out
        current, peak = tracemalloc.get_traced_memory()
        out["traced_mb"] = round(current / 2**20, 2)
        out["traced_peak_mb"] = round(peak / 2**20, 2)
        if self._snapshot is not None:
            stats = snap.compare_to(self._snapshot, "traceback")
            out["sites"] = [{"kib": round(s.size_diff / 1024, 1), "blocks": s.count_diff,
                             "trace": [f"{f.filename}:{f.lineno}" for f in s.traceback]} for s in stats[:top]]
        else:
            stats_now = snap.statistics("traceback")
            out["sites"] = [{"kib": round(s.size / 1024, 1), "blocks": s.count,
                             "trace": [f"{f.filename}:{f.lineno}" for f in s.traceback]} for s in stats_now[:top]]
        return out

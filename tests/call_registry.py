"""A stand-in for `Conversations` in view tests: live sessions by id, listeners, snapshot.

The real registry needs running workers; the views only read these three things from it.
"""

from __future__ import annotations

from typing import Any

from voicecall.conversation.session import CallInfo


class StubSession:
    def __init__(self, call_id: int, call_sid: str, state: str = "listening") -> None:
        self.call_id = call_id
        self.state = state
        self.info = CallInfo(call_sid=call_sid, stream_sid="MZ" + call_sid[2:])

    def snapshot(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "call_sid": self.info.call_sid, "from": "", "state": self.state,
                "turns": 1, "barge_ins": 0, "age_s": 1.0, "last_latency_ms": {"voice_to_voice": 612.0}}


class StubRegistry:
    """Sessions, listeners and snapshot, like `Conversations`; `emit` plays a session's events."""

    def __init__(self) -> None:
        self.sessions: dict[int, StubSession] = {}
        self._listeners: list[Any] = []

    @property
    def listeners(self) -> list[Any]:
        return self._listeners

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.snapshot() for s in self.sessions.values()]

    def emit(self, call_id: int, kind: str, data: dict[str, Any]) -> None:
        for listener in self._listeners:
            listener(call_id, kind, data)

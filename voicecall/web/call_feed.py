"""Live call events for browsers: one `Conversations` listener fanned out to WebSocket subscribers.

    CallSession._emit(call_id, kind, data)  ->  CallFeed.on_event  ->  Subscriber queue (bounded)
                                                                   ->  Subscriber queue ...
                                                each queue is drained by its own /softphone/events socket

Why a queue per subscriber: a slow browser must never slow a call down, so the listener only
appends (O(1), on the event loop) and a full queue drops its oldest event and counts it.
Events are plain JSON objects: {"call_id", "call_sid", "kind", "data", "ts"}.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("voicecall.web.views")

#: Events one subscriber may have waiting before the oldest is dropped (a browser tab that
#: stalls for seconds loses old transcript lines, never the call's progress).
QUEUE_EVENTS = 512


class _Info(Protocol):
    call_sid: str


class _Session(Protocol):
    info: _Info

    def snapshot(self) -> dict[str, Any]: ...


class CallRegistry(Protocol):
    """What the feed needs from `voicecall.conversation.calls.Conversations`."""

    sessions: dict[int, Any]

    @property
    def listeners(self) -> list[Callable[[int, str, dict[str, Any]], None]]: ...

    def snapshot(self) -> list[dict[str, Any]]: ...


class Subscriber:
    """One socket's view: every call (`call_sid` None) or the call with that Twilio callSid."""

    def __init__(self, call_sid: str | None, maxsize: int = QUEUE_EVENTS) -> None:
        self.call_sid = call_sid
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.dropped = 0

    def wants(self, call_sid: str) -> bool:
        return self.call_sid is None or self.call_sid == call_sid

    def push(self, event: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # the oldest goes: the newest state matters most
            self.dropped += 1
        self.queue.put_nowait(event)


class CallFeed:
    """Owns the listener registration and the set of subscribers."""

    def __init__(self, conversations: CallRegistry) -> None:
        self.conversations = conversations
        self.subscribers: set[Subscriber] = set()
        self._sids: dict[int, str] = {}  # call_id -> callSid, kept until the call's "ended"

    def attach(self) -> None:
        self.conversations.listeners.append(self.on_event)

    def detach(self) -> None:
        if self.on_event in self.conversations.listeners:
            self.conversations.listeners.remove(self.on_event)

    def subscribe(self, call_sid: str | None) -> Subscriber:
        sub = Subscriber(call_sid)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if sub.dropped:
            log.info("call view subscriber dropped %d event(s) (slow browser)", sub.dropped)

    def call_sid(self, call_id: int) -> str:
        sid = self._sids.get(call_id)
        if sid is None:
            session = self.conversations.sessions.get(call_id)
            sid = session.info.call_sid if session is not None else ""
            if sid:
                self._sids[call_id] = sid
        return sid

    def on_event(self, call_id: int, kind: str, data: dict[str, Any]) -> None:
        """The `Conversations` listener; runs on the event loop inside `CallSession._emit`."""
        sid = self.call_sid(call_id)
        event = {"call_id": call_id, "call_sid": sid, "kind": kind, "data": data, "ts": time.time()}
        for sub in self.subscribers:
            if sub.wants(sid):
                sub.push(event)
        if kind == "ended":
            self._sids.pop(call_id, None)

    def snapshot_event(self, call_sid: str | None) -> dict[str, Any]:
        """The first message of a socket: the live calls it will hear about."""
        calls = [c for c in self.conversations.snapshot() if call_sid is None or c.get("call_sid") == call_sid]
        return {"call_id": 0, "call_sid": call_sid or "", "kind": "snapshot", "data": {"calls": calls}, "ts": time.time()}

"""Typed control channel: tagged msgspec Structs over one end of a `multiprocessing.Pipe`.

Each end decodes one union (what it receives) with a decoder built once, so a malformed or
unexpected message is a `msgspec.ValidationError` naming what was expected, never a silent
dict. The blocking API serves worker loops; telephony integrates `fileno` with asyncio.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

import msgspec

from ipc.messages import Codec


class ChannelClosed(Exception):
    """The peer process closed its end (it exited or crashed)."""


class ControlChannel:
    """One end of a control pipe that sends any Struct and receives the `recv_union`."""

    def __init__(self, conn: Connection, recv_union: Any) -> None:
        self.conn = conn
        self._codec = Codec(recv_union)
        self.sent = 0
        self.received = 0

    def fileno(self) -> int:
        return self.conn.fileno()

    def send(self, msg: msgspec.Struct) -> None:
        """Send one message; raises ChannelClosed if the peer is gone."""
        try:
            self.conn.send_bytes(self._codec.encode(msg))
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise ChannelClosed(str(exc)) from exc
        self.sent += 1

    def poll(self, timeout: float | None = 0.0) -> bool:
        try:
            return self.conn.poll(timeout)
        except (EOFError, OSError) as exc:
            raise ChannelClosed(str(exc)) from exc

    def recv(self, timeout: float | None = None) -> Any | None:
        """The next message, or None if none arrives within `timeout` seconds."""
        try:
            if timeout is not None and not self.conn.poll(timeout):
                return None
            data = self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise ChannelClosed(str(exc)) from exc
        self.received += 1
        return self._codec.decode(data)

    def close(self) -> None:
        self.conn.close()

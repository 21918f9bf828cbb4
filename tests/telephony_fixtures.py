"""A real telephony server on a real socket (port 0) for tests, and a handler that records."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from voicecall.config import Config, ServerConfig
from voicecall.sim.echo import EchoHandler
from voicecall.telephony.app import Readiness, always_ready, create_app
from voicecall.twilio.handler import CallHandlerFactory
from voicecall.twilio.media_stream import MarkHandle, MediaStream
from voicecall.twilio.protocol import Start


class RecordingHandler:
    """Keeps everything the stream told it, so a test can look after the call."""

    instances: list[RecordingHandler] = []

    def __init__(self) -> None:
        self.stream: MediaStream | None = None
        self.start: Start | None = None
        self.frames: list[tuple[bytes, int, int, int]] = []
        self.marks: list[MarkHandle] = []
        self.digits: list[str] = []
        self.closed: list[str] = []
        RecordingHandler.instances.append(self)

    def on_start(self, stream: MediaStream, start: Start) -> None:
        self.stream, self.start = stream, start

    def on_media(self, frame: bytes, chunk: int, media_ms: int, arrival_ns: int) -> None:
        self.frames.append((frame, chunk, media_ms, arrival_ns))

    def on_mark(self, mark: MarkHandle) -> None:
        self.marks.append(mark)

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    async def on_close(self, reason: str) -> None:
        self.closed.append(reason)


def config(**server: Any) -> Config:
    return Config(server=ServerConfig(**server))


@contextlib.asynccontextmanager
async def running_server(cfg: Config | None = None, factory: CallHandlerFactory = EchoHandler,
                         readiness: Readiness = always_ready,
                         setup: Callable[[web.Application], None] | None = None) -> AsyncIterator[tuple[str, web.Application]]:
    """Yields (base URL, app) of a server on 127.0.0.1 with an OS-assigned port; `setup` adds routes first."""
    app = create_app(cfg or config(), handler_factory=factory, readiness=readiness)
    if setup is not None:
        setup(app)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()

"""Run the telephony app alone, without workers: manual tests and the CPU-per-call benchmark.

    python -m voicecall.telephony.server --config configs/cpu.toml --echo [--max-calls 200]

`--echo` answers every call with `EchoHandler` (the caller hears their own words back);
without it calls are accepted and stay silent.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web

from voicecall.config import Config, load_config
from voicecall.sim.echo import EchoHandler
from voicecall.telephony.app import create_app
from voicecall.twilio.handler import CallHandlerFactory, NullHandler
from voicecall.twilio.security import check_bind

log = logging.getLogger("voicecall.telephony")


async def serve(cfg: Config, factory: CallHandlerFactory, stop: asyncio.Event) -> None:
    """Bind (after the loopback rule), serve until `stop` is set, then shut down cleanly."""
    check_bind(cfg.server)
    runner = web.AppRunner(create_app(cfg, handler_factory=factory), handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.server.host, cfg.server.port, reuse_address=True)
        await site.start()
        log.info("telephony listening on http://%s:%d", cfg.server.host, cfg.server.port)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cpu.toml")
    parser.add_argument("--echo", action="store_true", help="echo each caller utterance back (EchoHandler)")
    parser.add_argument("--host", help="override server.host")
    parser.add_argument("--port", type=int, help="override server.port")
    parser.add_argument("--max-calls", type=int, help="override server.max_calls (the benchmark needs 200)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.host is not None:
        cfg.server.host = args.host
    if args.port is not None:
        cfg.server.port = args.port
    if args.max_calls is not None:
        cfg.server.max_calls = args.max_calls
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    factory: CallHandlerFactory = EchoHandler if args.echo else NullHandler

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)  # a flag, not a cancel: shutdown runs in the loop
        await serve(cfg, factory, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

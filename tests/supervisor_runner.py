"""Run the real Supervisor with test-only children: `python -m tests.supervisor_runner CONFIG`."""

from __future__ import annotations

import logging
import sys

from tests.lifecycle_workers import quiet_telephony_main
from voicecall.config import load_config
from voicecall.supervisor import Supervisor

ECHO = "tests.lifecycle_workers:EchoWorker"

if __name__ == "__main__":
    cfg = load_config(sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(Supervisor(cfg, worker_targets={"stt": ECHO, "llm": ECHO, "tts": ECHO}, telephony_main=quiet_telephony_main).run())

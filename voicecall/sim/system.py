"""A whole voicecall started locally for the tests and the soak: `run.py --config <derived>` on a free port.

The config is a copy of a base config (configs/cpu.toml by default) with its own port and call
database, plus any extra TOML. `stop()` reports what outlived the system (processes of ours,
shared-memory segments) instead of judging it: a test asserts, the soak counts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ipc.shm import leftover_segments, semaphores_of

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(root_pid: int) -> set[int]:
    """Pids whose parent chain leads to `root_pid`."""
    try:
        return {child.pid for child in psutil.Process(root_pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Leftovers:
    """What a stopped system left behind."""

    exit_code: int | None
    processes: list[int] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)


class LocalSystem:
    """A started voicecall; `url`, `db`, `log()`, `healthz()`, `wait_ready()`, `pid_of()`, `stop()`."""

    def __init__(self, tmp: Path, extra_toml: str = "", base: str = "configs/cpu.toml", records_url: str = "",
                 env: dict[str, str] | None = None, edit: Callable[[str], str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "calls.db"
        text = (ROOT / base).read_text()
        records = records_url or f"sqlite:///{self.db}"
        text = text.replace('port = 8080', f'port = {self.port}').replace('url = "sqlite:///data/calls.db"', f'url = "{records}"')
        text = text.replace('knowledge = "configs/', f'knowledge = "{ROOT}/configs/')
        self.recordings = tmp / "recordings"  # call recordings (when the base config turns them on)
        text = text.replace('recordings_dir = "data/recordings"', f'recordings_dir = "{self.recordings}"')
        if edit is not None:  # change keys of the base config in place (appending would repeat its sections)
            text = edit(text)
        self.config = tmp / "system.toml"
        self.config.write_text(text + "\n" + extra_toml)
        self.log_path = tmp / "system.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "--config", str(self.config)], cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.children: set[int] = set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthz(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def ready(self) -> bool:
        """/healthz says ready (raises if the system exited)."""
        self.children |= descendants(self.proc.pid)
        if self.proc.poll() is not None:
            raise RuntimeError(f"voicecall exited with {self.proc.returncode}:\n{self.log()[-6000:]}")
        try:
            code, body = self.healthz()
        except (OSError, ValueError):
            return False
        return code == 200 and bool(body.get("ready"))

    def pid_of(self, role: str) -> int | None:
        """The live pid of a child role, from the supervisor's log."""
        pids = [int(p) for p in re.findall(rf"{role}: spawned pid (\d+)", self.log())]
        live = [p for p in pids if alive(p)]
        return live[-1] if live else None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0, grace_s: float = 10.0) -> Leftovers:
        """Signal, wait, and report stragglers (killed) and segments left (unlinked by nobody)."""
        self.children |= descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(alive(p) for p in self.children):
            time.sleep(0.1)
        left = [p for p in self.children if alive(p)]
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        segments = [s for s in leftover_segments() if s.startswith(f"vc_{self.proc.pid}_")]
        spawned = {int(p) for p in re.findall(r"\w+: spawned pid (\d+)", self.log())}
        segments += [s for pid in sorted(spawned) for s in semaphores_of(pid)]
        return Leftovers(code, sorted(left), segments)

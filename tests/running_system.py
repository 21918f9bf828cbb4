"""The whole system as a test fixture: `python run.py --config <tmp config>` on a free port.

Everything real: supervisor, telephony, the three workers with the embedded default models.
The fixture checks on exit that no process of ours and no shared-memory segment is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ipc.shm import leftover_segments
from tests.processes import alive, assert_all_exited, descendants
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningSystem:
    """A started voicecall; `url`, `db`, `log()`, `healthz()`, `stop()`."""

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
        if edit is not None:  # change keys of the base config in place (appending would repeat its sections)
            text = edit(text)
        self.config = tmp / "system.toml"
        self.config.write_text(text + "\n" + extra_toml)
        self.log_path = tmp / "system.log"
        self._log = open(self.log_path, "w")
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

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        def ready() -> bool:
            self.children |= descendants(self.proc.pid)
            if self.proc.poll() is not None:
                raise AssertionError(f"voicecall exited with {self.proc.returncode}:\n{self.log()[-6000:]}")
            try:
                code, body = self.healthz()
            except (OSError, ValueError):
                return False
            return code == 200 and bool(body.get("ready"))

        wait_until(ready, timeout_s, lambda: f"voicecall to be ready:\n{self.log()[-6000:]}", poll_s=0.3)
        self.children |= descendants(self.proc.pid)

    def pid_of(self, role: str) -> int:
        """The live pid of a child role, from the supervisor's log."""
        import re

        pids = [int(p) for p in re.findall(rf"{role}: spawned pid (\d+)", self.log())]
        live = [p for p in pids if alive(p)]
        assert live, f"no live {role} process"
        return live[-1]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        self.children |= descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()
        assert_all_exited(self.children, self.log()[-3000:])
        leaked = [s for s in leftover_segments() if s.startswith(f"vc_{self.proc.pid}_")]
        assert not leaked, f"leaked shared memory: {leaked}"
        return code

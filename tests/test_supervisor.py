"""The supervisor with real processes: start, ready, restart, hang detection, failed load, drain.

The children here are test-only (they do trivial real work); the real workers and telephony
are exercised by their own tests and the end-to-end tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ipc.shm import leftover_segments
from tests.processes import alive, assert_all_exited, descendants
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "test.toml"
    path.write_text(
        "[supervisor]\nhealth_interval_s = 0.3\nhealth_timeout_s = 1.5\nrestart_backoff_s = 0.2\n"
        "drain_deadline_s = 2.0\nstop_grace_s = 2.0\n"
        "[ipc]\naudio_in_ring_bytes = 65536\naudio_out_ring_bytes = 65536\nevents_ring_bytes = 65536\nrequests_ring_bytes = 65536\n"
        + extra
    )
    return path


class System:
    """`python -m tests.supervisor_runner` as a subprocess, with its log captured."""

    def __init__(self, config: Path, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp_path / "supervisor.log"
        self.status_log = tmp_path / "telephony-status.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.supervisor_runner", str(config)], cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "QUIET_TELEPHONY_LOG": str(self.status_log), **(env or {})},
        )
        self.children: set[int] = set()

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        def seen() -> bool:
            self.children |= descendants(self.proc.pid)
            if self.log().count(text) >= count:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"{text!r} not seen (x{count}) before exit {self.proc.returncode}; "
                                     f"log:\n{self.log()}")
            return False

        wait_until(seen, timeout, lambda: f"{text!r} (x{count}); log:\n{self.log()}", poll_s=0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.children |= descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()
        assert_all_exited(self.children, self.log())
        assert not [s for s in leftover_segments() if s.startswith(f"vc_{self.proc.pid}_")], "leaked segments"
        return code


def _pids_from_log(log: str, name: str) -> list[int]:
    import re

    return [int(m) for m in re.findall(rf"{name}: spawned pid (\d+)", log)]


@pytest.fixture
def system(tmp_path: Path):
    made: list[System] = []

    def start(extra: str = "", env: dict[str, str] | None = None) -> System:
        s = System(_config(tmp_path, extra), tmp_path, env)
        made.append(s)
        return s

    yield start
    for s in made:
        if s.proc.poll() is None:
            s.stop(signal.SIGKILL)


def test_start_ready_and_clean_stop(system) -> None:
    s = system("[stt.process]\nenv = { ECHO_LOAD_S = \"0.4\" }\n")
    s.wait_for("voicecall ready")
    log = s.log()
    for name in ("telephony", "stt", "llm", "tts"):
        assert f"  {name}" in log
    assert "loading echo model" in log
    assert s.stop() == 0
    assert "stopped cleanly" in s.log()


@pytest.mark.parametrize("victim", ["stt", "llm", "tts"])
def test_sigkilled_worker_is_restarted_and_telephony_told(system, victim: str) -> None:
    s = system(f"[{victim}.process]\nenv = {{ ECHO_LOAD_S = \"0.1\" }}\n")
    s.wait_for("voicecall ready")
    first = _worker_pid(s, victim)
    semaphore = Path(f"/dev/shm/sem.loky-{first}-test")  # as joblib's loky leaves one, unlinked only at exit
    semaphore.write_bytes(b"\0" * 32)
    os.killpg(first, signal.SIGKILL)
    s.wait_for(f"{victim} is serving again")
    assert f"{victim} died (killed by signal SIGKILL)" in s.log()
    assert not semaphore.exists(), "the dead worker's named semaphore was left in /dev/shm"
    assert f"{victim} restarting" in s.status_log.read_text()
    wait_until(lambda: f"{victim} ready" in s.status_log.read_text(), 5, f"telephony to hear that {victim} is ready")
    assert _worker_pid(s, victim) != first
    assert s.stop() == 0


def test_failed_load_names_worker_and_cause(system) -> None:
    s = system("[tts.process]\nenv = { ECHO_FAIL_LOAD = \"/models/voice-missing.onnx\" }\n")
    code = s.proc.wait(60)
    assert code == 1
    log = s.log()
    assert "tts failed to start" in log and "voice-missing.onnx" in log
    assert s.stop() == 1


def test_hung_worker_detected_by_health_check_and_restarted(system) -> None:
    s = system("[llm.process]\nenv = { ECHO_HANG_AFTER = \"0\" }\n")
    s.wait_for("voicecall ready")
    # the first health check is a message too, so the worker wedges on its first request
    s.wait_for("llm is hung", timeout=30)
    s.wait_for("llm died", timeout=30)
    assert s.stop() == 0


def _worker_pid(s: System, name: str) -> int:
    pids = wait_until(lambda: [p for p in _pids_from_log(s.log(), name) if alive(p)], 10,
                      lambda: f"a live {name} pid in the log:\n{s.log()}", poll_s=0.1)
    return pids[-1]

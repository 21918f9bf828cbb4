"""`python run.py` with call records it cannot use stops at start-up and says why (masked)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.running_system import RunningSystem

pytestmark = pytest.mark.slow


def test_unreachable_postgresql_stops_start_up_naming_records_url_with_the_password_masked(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://voicecall:pw-in-the-url@127.0.0.1:{port}/calls"
    system = RunningSystem(tmp_path, records_url=url, env={"VOICECALL_DB_PASSWORD": "pw-from-the-env"})
    try:
        code = system.proc.wait(240)
    finally:
        system.stop()
    log = system.log()
    assert code == 1, log[-3000:]
    assert f"telephony failed to start: records.url postgresql://voicecall:***@127.0.0.1:{port}/calls: cannot connect" in log, log[-3000:]
    assert "pw-in-the-url" not in log and "pw-from-the-env" not in log

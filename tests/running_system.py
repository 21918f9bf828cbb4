"""The whole system as a test fixture: `python run.py --config <tmp config>` on a free port.

Everything real: supervisor, telephony, the three workers with the embedded default models.
The fixture checks on exit that no process of ours and no shared-memory segment is left
(`voicecall.sim.system.LocalSystem` reports them; here they fail the test).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.waiting import wait_until
from voicecall.sim.system import ROOT, LocalSystem, free_port

__all__ = ["ROOT", "RunningSystem", "free_port"]


class RunningSystem(LocalSystem):
    """A started voicecall whose `stop()` asserts nothing outlived it."""

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        def ready() -> bool:
            try:
                return self.ready()
            except RuntimeError as exc:
                raise AssertionError(str(exc)) from None

        wait_until(ready, timeout_s, lambda: f"voicecall to be ready:\n{self.log()[-6000:]}", poll_s=0.3)

    def finished_call(self, call_sid: str, timeout_s: float = 10.0) -> tuple[dict, list[dict]]:
        """The record of an ended call and its turns, once the records writer has them."""
        from voicecall.records import call_turns, find_call
        from voicecall.storage.engine import connect

        db = connect(f"sqlite:///{self.db}", readonly=True)
        try:
            def finished() -> Any:
                call = find_call(db, call_sid)
                return call if call is not None and call["ended_at"] else None

            call = wait_until(finished, timeout_s, f"a finished record for {call_sid}", poll_s=0.1)
            return call, call_turns(db, call["id"])
        finally:
            db.close()

    def pid_of(self, role: str) -> int:  # type: ignore[override]
        pid = super().pid_of(role)
        assert pid is not None, f"no live {role} process"
        return pid

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0, grace_s: float = 10.0) -> int:  # type: ignore[override]
        left = super().stop(sig, timeout_s, grace_s)
        assert not left.processes, f"orphaned processes after exit: {left.processes}\n{self.log()[-3000:]}"
        assert not left.segments, f"leaked shared memory: {left.segments}"
        return left.exit_code if left.exit_code is not None else -999

    @contextmanager
    def serving(self, log_tail: int = 6000) -> Iterator[RunningSystem]:
        """Ready for the block; afterwards stopped cleanly (exit 0, nothing left behind), its log printed."""
        try:
            self.wait_ready()
            yield self
        finally:
            code = self.stop()
            print(self.log()[-log_tail:])
            assert code == 0

"""The whole system as a test fixture: `python run.py --config <tmp config>` on a free port.

Everything real: supervisor, telephony, the three workers with the embedded default models.
The fixture checks on exit that no process of ours and no shared-memory segment is left
(`voicecall.sim.system.LocalSystem` reports them; here they fail the test).
"""

from __future__ import annotations

import signal

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

    def pid_of(self, role: str) -> int:  # type: ignore[override]
        pid = super().pid_of(role)
        assert pid is not None, f"no live {role} process"
        return pid

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0, grace_s: float = 10.0) -> int:  # type: ignore[override]
        left = super().stop(sig, timeout_s, grace_s)
        assert not left.processes, f"orphaned processes after exit: {left.processes}\n{self.log()[-3000:]}"
        assert not left.segments, f"leaked shared memory: {left.segments}"
        return left.exit_code if left.exit_code is not None else -999

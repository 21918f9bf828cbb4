"""Spawning and stopping child processes: the one helper every process of ours starts from.

A `ChildHandle` is one role (stt, llm, tts, telephony) across its incarnations: each `start()`
spawns a fresh process (`spawn` method, named `voicecall-<role>`) with a new control pipe and a
new death pipe; the rings in its spec outlive incarnations, so a restarted worker re-attaches
to the same segments. The child leads its own process group, so one `killpg` also reaps
grandchildren such as vLLM's engine process.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from ipc.channel import ChannelClosed, ControlChannel
from ipc.messages import FromChild, Stop
from ipc.shm import semaphores_of, unlink_segment

log = logging.getLogger("voicecall.process")

SPAWN = mp.get_context("spawn")


class ChildHandle:
    """Spawns, watches and stops one child role; `spec` must have `control` and `death` fields."""

    def __init__(self, name: str, main: Callable[[Any], None], spec: Any) -> None:
        self.name = name
        self._main = main
        self._spec = spec
        self.process: mp.process.BaseProcess | None = None
        self.channel: ControlChannel | None = None
        self._death_writer: Connection | None = None
        self.incarnation = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def sentinel(self) -> int | None:
        return self.process.sentinel if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def start(self) -> None:
        """Spawn a new incarnation (the previous one must be gone)."""
        parent_ctl, child_ctl = SPAWN.Pipe(duplex=True)
        death_reader, death_writer = SPAWN.Pipe(duplex=False)
        spec = replace(self._spec, control=child_ctl, death=death_reader)
        self.incarnation += 1
        proc = SPAWN.Process(target=self._main, args=(spec,), name=f"voicecall-{self.name}", daemon=False)
        proc.start()
        child_ctl.close()  # the child has its own copies now
        death_reader.close()
        self.process = proc
        self.channel = ControlChannel(parent_ctl, FromChild)
        self._death_writer = death_writer
        log.info("%s: spawned pid %d (incarnation %d)", self.name, proc.pid, self.incarnation)

    def ask_to_stop(self, deadline_s: float) -> None:
        """Send `Stop` without waiting (so several children wind down in parallel)."""
        if self.alive() and self.channel is not None:
            try:
                self.channel.send(Stop(deadline_s=deadline_s))
            except ChannelClosed:
                pass

    def stop(self, grace_s: float, deadline_s: float = 2.0, *, asked: bool = False) -> int | None:
        """Ask politely (`Stop`, unless `asked` already), then SIGTERM, then SIGKILL the group. Idempotent."""
        proc = self.process
        if proc is None:
            return None
        if not asked:
            self.ask_to_stop(deadline_s)
        proc.join(grace_s + deadline_s)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not proc.is_alive():
                break
            log.warning("%s: still running after stop; sending %s", self.name, sig.name)
            self.signal_group(sig)
            proc.join(grace_s)
        self.reap()
        return proc.exitcode

    def signal_group(self, sig: int) -> None:
        """Signal the child's process group (falls back to the pid before setpgid ran)."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        """After the child died: kill what is left of its group (grandchildren), close pipes."""
        proc = self.process
        if proc is None:
            return
        proc.join(0.5)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned grandchildren keep the group alive
        except (ProcessLookupError, PermissionError):
            pass
        for name in semaphores_of(proc.pid):  # its libraries' exit handlers did not run
            unlink_segment(name)
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self._death_writer is not None:
            self._death_writer.close()
            self._death_writer = None
        proc.join(0.5)

"""Doorbell: an eventfd a producer rings to wake a parked consumer.

A doorbell crosses a `spawn` boundary like a `multiprocessing.Connection` does: while the
parent pickles a child's arguments, the fd is duplicated into the child (`reduction.DupFd`).
The creator closes it with `close()`; each process closes its own copy.
"""

from __future__ import annotations

import os
import select
from multiprocessing import reduction


class Doorbell:
    """A counting wake-up fd (Linux eventfd, non-blocking)."""

    __slots__ = ("fd", "_closed")

    def __init__(self, fd: int | None = None) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) if fd is None else fd
        self._closed = False

    def ring(self) -> None:
        """Wake the consumer; cheap and never blocks (the counter saturates far away)."""
        try:
            os.eventfd_write(self.fd, 1)
        except BlockingIOError:  # counter at its maximum: the consumer is already woken
            pass

    def drain(self) -> None:
        """Reset the counter after waking (non-blocking)."""
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def wait(self, timeout: float | None) -> bool:
        """Block until rung or `timeout` seconds pass; True if rung. Drains the counter."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            self.drain()
            return True
        return False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                os.close(self.fd)
            except OSError:
                pass

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return _rebuild_doorbell, (reduction.DupFd(self.fd),)


def _rebuild_doorbell(dup: object) -> Doorbell:
    return Doorbell(dup.detach())  # type: ignore[attr-defined]

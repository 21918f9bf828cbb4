"""The bootstrap every spawned child runs first, whatever its role (model worker or telephony).

Its own process group (so one killpg reaps grandchildren such as vLLM's engine), SIGINT left
to the supervisor, a process title that says the role in `ps`/`top`, log lines prefixed with
the role, and a death watch that takes the group down as soon as the supervisor vanishes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

TITLE_PREFIX = "voicecall: "


def bootstrap_child(role: str, log_level: str, death: Connection | None) -> None:
    """Run once at the top of a spawn target, before anything heavy is imported."""
    enter_own_process_group()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor coordinates shutdown
    set_process_title(role)
    configure_child_logging(role, log_level)
    if death is not None:
        start_death_watch(role, death)


def set_process_title(role: str) -> None:
    """`voicecall: <role>` in ps/top instead of `python -c from multiprocessing.spawn ...`."""
    try:
        import setproctitle
    except ImportError:  # optional at run time: a missing title must never stop a call
        return
    setproctitle.setproctitle(TITLE_PREFIX + role)


def start_death_watch(name: str, death: Connection) -> None:
    """Exit (with our whole process group) as soon as the supervisor vanishes."""
    threading.Thread(target=_watch_death, args=(death,), name=f"{name}-death-watch", daemon=True).start()


def _watch_death(death: Connection) -> None:
    # The supervisor holds the only write end; EOF means it is gone, so we must go too,
    # taking our process group (vLLM's engine process, for one) with us.
    try:
        death.recv_bytes()
    except (EOFError, OSError):
        pass
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os._exit(3)


def configure_child_logging(name: str, level: str) -> None:
    """Plain log lines to stderr, prefixed with the process role."""
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format=f"%(asctime)s {name:<9} %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def enter_own_process_group() -> None:
    """Lead a process group so the supervisor can reap grandchildren (vLLM) with one killpg."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass

"""Suite-wide fixtures: every test must leave no shared-memory segment and no child process."""

from __future__ import annotations

import os
import random

import pytest

from ipc.shm import leftover_segments, unlink_segment
from tests.waiting import wait_until


def _creator_pid(name: str) -> int:
    try:
        return int(name.split("_")[1])  # vc_<pid>_<label>_<random> (ipc.shm.new_segment_name)
    except (IndexError, ValueError):
        return -1


def _orphaned(name: str) -> bool:
    """A segment whose creator is this process or is gone: nobody will unlink it but us.

    Segments of other live processes (another test run on the same machine) are not ours to judge.
    """
    pid = _creator_pid(name)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, ValueError):
        return False
    return False


@pytest.fixture(autouse=True)
def no_leaked_segments():
    """Fail any test that leaves a `/dev/shm/vc_*` segment behind (and clean it up)."""
    before = set(leftover_segments())
    yield

    def leaked() -> list[str]:
        return sorted(n for n in set(leftover_segments()) - before if _orphaned(n))

    try:  # an owner in a child may be finishing its exit
        wait_until(lambda: not leaked(), 2.0,
                   lambda: f"a child owner to unlink them (test leaked shared-memory segments: {leaked()})")
    finally:
        for name in leaked():
            unlink_segment(name)


@pytest.fixture
def seed(request) -> int:
    """A random seed, printed so a failure can be replayed with VOICECALL_SEED."""
    value = int(os.environ.get("VOICECALL_SEED", random.randrange(1 << 31)))
    print(f"\n[{request.node.name}] seed={value} (replay: VOICECALL_SEED={value})")
    return value


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py); skips when it cannot run here.

    The password is in the environment under `tests.postgres.PASSWORD_ENV` for children too.
    """
    from tests.postgres import PASSWORD, PASSWORD_ENV, PostgresServer, why_unavailable

    why = why_unavailable()
    if why:
        pytest.skip(why)
    server = PostgresServer()
    os.environ[PASSWORD_ENV] = PASSWORD
    try:
        yield server
    finally:
        os.environ.pop(PASSWORD_ENV, None)
        server.close()


#: Files that start a whole system or stream real-time audio, longest first (seconds measured
#: serially on a 2-core box with `pytest --durations`). `make test` runs whole files on two
#: workers (`--dist loadfile`); handing these out first leaves no worker with a 150 s file at the
#: end while the other idles. Files not named here follow, in collection order.
LONGEST_FIRST = (
    "test_faults.py",  # 176 s
    "test_soak.py",  # 153 s
    "test_e2e.py",  # 131 s
    "test_turn_taking.py",  # 70 s
    "test_actions_e2e.py",  # 45 s
    "test_two_boxes.py",  # 44 s
    "test_stt_worker.py",  # 42 s
    "test_llm_vllm.py",  # 30 s
    "test_browser.py",  # 30 s
    "test_outbound_e2e.py",  # 28 s
    "test_smart_turn.py",  # 20 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist workers, the files of `LONGEST_FIRST` first; a plain run keeps its order."""
    if not hasattr(config, "workerinput"):
        return
    last = len(LONGEST_FIRST)
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST else last)

"""llm.base_urls: the llm worker fails over between OpenAI-compatible servers, then to the faq answer.

Real worker process, real sockets: a port nobody listens on (connection refused), a server that
accepts and never answers (a hung box), and the SSE endpoint of tests/test_llm_worker.py. The
two-box system test (tests/test_two_boxes.py) does the same against a real `vllm serve`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ipc.messages import GenerationDone, LlmEvent
from tests.test_llm_worker import ANSWERS, TARGET, SseServer, ask, done_of, ended, texts
from voicecall.sim.worker_harness import WorkerHarness
from workers.config import LlmConfig
from workers.llm.failover import ServerOrder


class SilentServer:
    """Accepts connections and reads requests but never answers (a hung LLM box)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SseServer, SilentServer]]:
    sse, silent = SseServer(), SilentServer()
    sse.start()
    yield sse, silent
    sse.stop()
    silent.close()


@pytest.fixture(scope="module")
def llm(servers) -> Iterator[WorkerHarness]:
    """One worker for the module: a refused server, a hung one, the live one; no cooldown, so every
    turn walks the list from the top (the order after failures is ServerOrder's, tested below)."""
    sse, silent = servers
    urls = [refused_url(), f"http://127.0.0.1:{silent.port}/v1", f"http://127.0.0.1:{sse.port}/v1"]
    config = LlmConfig(backend="openai", base_urls=urls, api_model="test", first_token_timeout_s=4.0,
                       failover_first_token_s=0.6, failover_cooldown_s=0.0, connect_timeout_s=1.0, stall_timeout_s=5.0)
    with WorkerHarness("llm", TARGET, config, LlmEvent) as h:
        h.start(120)
        yield h


def test_server_order_puts_recent_failures_last() -> None:
    order = ServerOrder(3, cooldown_s=10.0)
    assert order.order() == [0, 1, 2]
    order.failed(0)
    assert order.order() == [1, 2, 0]
    order.failed(1)
    assert order.order() == [2, 0, 1]  # the older failure first among the failed
    order.answered(0)
    assert order.order() == [0, 2, 1]
    assert order.order(now=time.monotonic() + 11) == [0, 1, 2]  # cooled down


def test_refused_and_hung_servers_are_skipped_and_the_live_one_answers(llm: WorkerHarness, servers) -> None:
    _sse, silent = servers
    before = silent.connections
    t0 = time.monotonic()
    ask(llm, 1, 1, "ok")
    got = llm.collect(ended(1, 1), 15)
    elapsed = time.monotonic() - t0
    done = done_of(got, 1, 1)
    assert isinstance(done, GenerationDone) and not done.fallback and done.backend == "openai"
    assert "".join(r.payload.decode() for r in texts(got, 1, 1)).rstrip() == "Sure, we can do that. Goodbye!"
    assert silent.connections == before + 1 and elapsed >= 0.6  # it waited out the hung server's deadline


def test_all_servers_failing_falls_back_to_the_faq_answer(llm: WorkerHarness) -> None:
    ask(llm, 3, 1, "error", "When are you open on Saturday?")  # refused, hung, then HTTP 503 from the last
    got = llm.collect(ended(3, 1), 15)
    done = done_of(got, 3, 1)
    assert isinstance(done, GenerationDone) and done.fallback and done.backend == "faq"
    assert "".join(r.payload.decode() for r in texts(got, 3, 1)) == ANSWERS["hours"]

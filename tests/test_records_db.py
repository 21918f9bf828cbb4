"""Call records on both engines: SQLite and a real PostgreSQL (tests/postgres.py).

One schema through versioned migrations; a database ahead of this code is refused; an
unreachable server is a clear start-up error with the password masked; a server lost mid-run
costs no record within the buffer.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until
from voicecall.records import CallRecords, call_turns, find_call, open_records, recent_calls
from voicecall.storage.engine import RecordsUnavailable, connect, mask
from voicecall.storage.migrations import SCHEMA_VERSION, SchemaTooNew, current_version

PW_ENV = "VOICECALL_TEST_DB_PASSWORD"


@pytest.fixture(params=["sqlite", "postgresql"])
def records_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/calls.db"
    server = request.getfixturevalue("postgres")
    return server.create_database(f"t_{request.node.name.split('[')[0][-40:]}")


def write_call(rec: CallRecords, sid: str, turns: int = 2) -> None:
    ids: list[int] = []
    rec.call_started(ids.append, call_sid=sid, stream_sid="MZ" + sid, from_number="+15550100")
    row = lambda: ids[0] if ids else None  # noqa: E731
    for n in range(1, turns + 1):
        rec.turn(row, n, "caller", f"question {n}", stamps={"speech_end_ns": 1_700_000_000_000_000_000 + n, "turn_end_ns": 2})
        rec.turn(row, n, "agent", f"answer {n}", heard_text=f"answer {n}", interrupted=n == 2)
    rec.event(row, "apology", "test")
    rec.call_ended(row, "caller hung up", barge_ins=1)


def test_a_caller_who_went_on_is_one_caller_turn(records_url: str) -> None:
    rec = CallRecords(records_url, password_env=PW_ENV)
    ids: list[int] = []
    rec.call_started(ids.append, call_sid="CA9", stream_sid="MZ9")
    row = lambda: ids[0] if ids else None  # noqa: E731
    rec.turn(row, 1, "caller", "I need to cancel my appointment.")
    rec.caller_went_on(row, 1, 2, "I need to cancel my appointment. And book one for Friday.",
                       stamps={"speech_end_ns": 7})
    rec.turn(row, 2, "agent", "Done.", heard_text="Done.")
    rec.call_ended(row, "caller hung up")
    assert rec.flush(10)
    rec.close()
    db = connect(records_url, password_env=PW_ENV, readonly=True)
    try:
        call = find_call(db, "CA9")
        assert call is not None
        turns = call_turns(db, call["id"])
        assert [(t["turn_id"], t["role"], t["text"]) for t in turns] == [
            (2, "caller", "I need to cancel my appointment. And book one for Friday."), (2, "agent", "Done.")]
        assert turns[0]["speech_end_ns"] == 7
        events = db.query("SELECT kind, detail FROM call_events WHERE call_id = ?", (call["id"],))
        assert events == [{"kind": "went_on", "detail": "turn 1 went on as turn 2"}]
    finally:
        db.close()


def test_one_schema_on_both_engines(records_url: str) -> None:
    rec = CallRecords(records_url, instance="box-a", password_env=PW_ENV)
    write_call(rec, "CA1")
    assert rec.flush(10)
    rec.close()
    db = connect(records_url, password_env=PW_ENV, readonly=True)
    try:
        assert current_version(db) == SCHEMA_VERSION
        call = find_call(db, "CA1")
        assert call is not None and call["instance"] == "box-a" and call["end_reason"] == "caller hung up"
        assert call["barge_ins"] == 1 and call["ended_at"] >= call["started_at"]
        turns = call_turns(db, call["id"])
        assert [t["role"] for t in turns] == ["caller", "agent"] * 2
        assert turns[0]["speech_end_ns"] == 1_700_000_000_000_000_001  # 64-bit stamps survive
        assert turns[3]["interrupted"] == 1 and turns[3]["heard_text"] == "answer 2"
        assert [c["call_sid"] for c in recent_calls(db)] == ["CA1"]
        assert find_call(db, str(call["id"]))["call_sid"] == "CA1"  # type: ignore[index]
    finally:
        db.close()


def test_two_writers_one_database_and_migrations_run_once(records_url: str) -> None:
    """Two boxes start at once on one (empty) database: one migrates, both write."""
    boxes: dict[str, CallRecords] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            boxes[name] = CallRecords(records_url, instance=name, password_env=PW_ENV)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in ("box-a", "box-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    write_call(boxes["box-a"], "CA-a")
    write_call(boxes["box-b"], "CA-b")
    for rec in boxes.values():
        assert rec.flush(10)
        rec.close()
    db = connect(records_url, password_env=PW_ENV)
    try:
        assert {(c["call_sid"], c["instance"]) for c in recent_calls(db)} == {("CA-a", "box-a"), ("CA-b", "box-b")}
        versions = [r["version"] for r in db.query("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
    finally:
        db.close()


def test_database_from_a_newer_version_is_refused(records_url: str) -> None:
    open_records(records_url, password_env=PW_ENV).close()
    db = connect(records_url, password_env=PW_ENV)
    db.execute("INSERT INTO schema_version VALUES (?, ?, ?, ?)", (SCHEMA_VERSION + 1, "from the future", time.time(), "x"))
    db.close()
    with pytest.raises(SchemaTooNew) as info:
        CallRecords(records_url, password_env=PW_ENV)
    msg = str(info.value)
    assert "records.url" in msg and f"schema version {SCHEMA_VERSION + 1}" in msg and "newer voicecall" in msg


def test_legacy_sqlite_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A calls.db written before schema_version (user_version = 1) keeps its calls and gains `instance`."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE calls (id INTEGER PRIMARY KEY, call_sid TEXT, stream_sid TEXT, from_number TEXT,
            to_number TEXT, started_at REAL NOT NULL, ended_at REAL, end_reason TEXT,
            fallbacks INTEGER DEFAULT 0, barge_ins INTEGER DEFAULT 0);
        CREATE TABLE turns (id INTEGER PRIMARY KEY, call_id INTEGER NOT NULL, turn_id INTEGER NOT NULL,
            role TEXT NOT NULL, text TEXT NOT NULL, heard_text TEXT, interrupted INTEGER DEFAULT 0,
            fallback INTEGER DEFAULT 0, created_at REAL NOT NULL);
        CREATE TABLE call_events (id INTEGER PRIMARY KEY, call_id INTEGER, at REAL, kind TEXT, detail TEXT);
        INSERT INTO calls (call_sid, started_at) VALUES ('CAold', 1.0);
        PRAGMA user_version = 1;
    """)
    conn.close()
    db = open_records(str(path), instance="box-a")
    try:
        assert current_version(db) == SCHEMA_VERSION
        assert find_call(db, "CAold")["instance"] is None  # type: ignore[index]
        assert [r["applied_by"] for r in db.query("SELECT applied_by FROM schema_version ORDER BY version")] == [
            "user_version"] + ["box-a"] * (SCHEMA_VERSION - 1)  # every later migration applied here
    finally:
        db.close()


def test_unreachable_postgresql_is_a_clear_error_with_the_password_masked(postgres) -> None:
    url = f"postgresql://voicecall:hunter2-secret@127.0.0.1:{_closed_port()}/calls"
    with pytest.raises(RecordsUnavailable) as info:
        CallRecords(url, connect_timeout_s=2.0)
    msg = str(info.value)
    assert msg.startswith("records.url postgresql://voicecall:***@127.0.0.1:") and "cannot connect" in msg
    assert "hunter2" not in msg
    assert mask(url) == url.replace("hunter2-secret", "***")


def test_wrong_password_from_the_environment_is_refused_without_echoing_it(postgres, monkeypatch) -> None:
    monkeypatch.setenv("VOICECALL_WRONG_PW", "not-the-password-xyz")
    with pytest.raises(RecordsUnavailable) as info:
        CallRecords(postgres.url("postgres"), password_env="VOICECALL_WRONG_PW")
    assert "password authentication failed" in str(info.value) and "not-the-password-xyz" not in str(info.value)


def test_postgresql_lost_mid_run_buffers_and_flushes_on_reconnect(postgres, caplog) -> None:
    url = postgres.create_database("t_lost_mid_run")
    rec = CallRecords(url, instance="box-a", password_env=PW_ENV)
    try:
        write_call(rec, "CA-before")
        assert rec.flush(10)
        postgres.stop()
        write_call(rec, "CA-during", turns=3)  # 1 + 6 + 1 + 1 records while the server is away
        wait_until(lambda: not rec.connected, 15, "the writer to notice the server is gone")
        assert rec.disconnects == 1
        assert rec.buffered() == 9 and rec.dropped == 0
        assert not rec.flush(0.5)
        exposed = _metrics(rec)
        assert 'records_db_connected{engine="postgresql"} 0.0' in exposed
        assert 'records_buffered{engine="postgresql"} 9.0' in exposed
        assert 'records_db_disconnects_total{engine="postgresql"} 1.0' in exposed
        postgres.start()
        assert rec.flush(30), "buffered records were not written after the server came back"
        assert rec.connected and rec.buffered() == 0
    finally:
        if not postgres.running():
            postgres.start()
        rec.close()
    assert any("lost" in r.getMessage() for r in caplog.records)
    assert any("is back: writing" in r.getMessage() for r in caplog.records)
    db = connect(url, password_env=PW_ENV)
    try:
        during = find_call(db, "CA-during")
        assert during is not None and during["end_reason"] == "caller hung up"
        assert len(call_turns(db, during["id"])) == 6
        assert len(call_turns(db, find_call(db, "CA-before")["id"])) == 4  # type: ignore[index]
    finally:
        db.close()


def test_buffer_is_bounded_while_the_server_is_away(postgres) -> None:
    url = postgres.create_database("t_bounded")
    rec = CallRecords(url, password_env=PW_ENV, buffer_max=5)
    postgres.stop()
    try:
        write_call(rec, "CA-x", turns=3)  # 9 records: 5 buffered, 4 dropped
        assert rec.dropped == 4 and rec.buffered() == 5
        postgres.start()
        assert rec.flush(30)
    finally:
        if not postgres.running():
            postgres.start()
        rec.close()
    db = connect(url, password_env=PW_ENV)
    try:
        call = find_call(db, "CA-x")
        assert call is not None and len(call_turns(db, call["id"])) == 4
    finally:
        db.close()


def _metrics(rec: CallRecords) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from voicecall.telephony.records_metrics import RecordsCollector

    registry = CollectorRegistry()
    registry.register(RecordsCollector(rec))
    return generate_latest(registry).decode()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_password_comes_only_from_the_environment(postgres) -> None:
    assert os.environ.get(PW_ENV)
    url = postgres.create_database("t_pw")
    assert ":" not in url.split("@")[0].removeprefix("postgresql://")
    open_records(url, password_env=PW_ENV).close()


def test_calls_and_trace_tools_read_postgresql(postgres) -> None:
    import json
    import subprocess
    import sys

    url = postgres.create_database("t_tools")
    rec = CallRecords(url, instance="box-t", password_env=PW_ENV)
    write_call(rec, "CA-tool")
    assert rec.flush(10)
    rec.close()
    root = Path(__file__).resolve().parents[1]

    def run(command: str, *args: str) -> str:  # python -m voicecall.cli: the tree under test
        proc = subprocess.run([sys.executable, "-m", "voicecall.cli", command, "--db", url, "--password-env", PW_ENV, *args],
                              cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    listing = run("calls")
    assert "CA-tool" in listing and "box-t" in listing
    shown = json.loads(run("calls", "show", "CA-tool", "--json"))
    assert shown["instance"] == "box-t" and len(shown["turns"]) == 4
    trace = json.loads(run("trace", "CA-tool", "--json"))
    assert trace["call_sid"] == "CA-tool" and len(trace["turns"]) == 2


def test_check_reports_records_url_reachable_or_why_not(postgres, tmp_path: Path) -> None:
    from voicecall.config import Config, RecordsConfig
    from voicecall.preflight import check_records

    url = postgres.create_database("t_check")
    open_records(url, password_env=PW_ENV).close()
    found, problems = check_records(Config(records=RecordsConfig(url=url, password_env=PW_ENV)), "x.toml")
    assert not problems and f"schema v{SCHEMA_VERSION}" in found[0]
    bad = f"postgresql://voicecall:secret-xyz@127.0.0.1:{_closed_port()}/calls"
    found, problems = check_records(Config(records=RecordsConfig(url=bad, connect_timeout_s=1.0)), "x.toml")
    assert not found and problems[0].startswith("x.toml: $.records.url: records.url postgresql://voicecall:***@")
    assert "secret-xyz" not in problems[0]


def test_start_up_closes_only_this_instances_abandoned_calls(records_url: str) -> None:
    """A restarted box closes the rows its killed predecessor left open, never a live call of another box."""
    a, b = (CallRecords(records_url, instance=n, password_env=PW_ENV) for n in ("box-a", "box-b"))
    try:
        for rec, sid in ((a, "CA-a-open"), (b, "CA-b-live")):
            rec.call_started(lambda _id: None, call_sid=sid)
            assert rec.flush(10)
        assert a.end_abandoned_calls() == 1
    finally:
        a.close()
        b.close()
    db = connect(records_url, password_env=PW_ENV)
    try:
        assert find_call(db, "CA-a-open")["end_reason"].startswith("ended abnormally")  # type: ignore[index]
        assert find_call(db, "CA-b-live")["ended_at"] is None  # type: ignore[index]
    finally:
        db.close()

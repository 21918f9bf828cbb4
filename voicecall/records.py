"""Call records in SQLite (WAL): calls, and every turn with its text, what was heard, and timings.

Writes go through one writer thread, so the telephony event loop never waits on the disk, and
each is committed at once, so a crash loses nothing already said. Readers (`tools/calls.py`,
the `/calls` page) open their own connections.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from voicecall.latency import STAMP_NAMES, TurnStamps

log = logging.getLogger("voicecall.records")

SCHEMA_VERSION = 1
#: Per-turn monotonic stamps (`voicecall.latency.TurnStamps`), plus when telephony *received* each
#: worker's stamped result, so the IPC hop of every stage is visible (`tools/trace.py`).
#: One INTEGER column each in `turns`; other tools read these columns by name.
STAMPS = STAMP_NAMES
_MIGRATIONS = {
    1: f"""
    CREATE TABLE IF NOT EXISTS calls (
        id INTEGER PRIMARY KEY,
        call_sid TEXT, stream_sid TEXT, from_number TEXT, to_number TEXT,
        started_at REAL NOT NULL, ended_at REAL, end_reason TEXT,
        fallbacks INTEGER DEFAULT 0, barge_ins INTEGER DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS calls_sid ON calls(call_sid);
    CREATE TABLE IF NOT EXISTS turns (
        id INTEGER PRIMARY KEY,
        call_id INTEGER NOT NULL REFERENCES calls(id),
        turn_id INTEGER NOT NULL,
        role TEXT NOT NULL,
        text TEXT NOT NULL,
        heard_text TEXT,
        interrupted INTEGER DEFAULT 0,
        fallback INTEGER DEFAULT 0,
        created_at REAL NOT NULL,
        {", ".join(f"{s} INTEGER" for s in STAMPS)}
    );
    CREATE INDEX IF NOT EXISTS turns_call ON turns(call_id, id);
    CREATE TABLE IF NOT EXISTS call_events (
        id INTEGER PRIMARY KEY, call_id INTEGER, at REAL, kind TEXT, detail TEXT
    );
    """,
}


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open the database (creating and migrating it unless `readonly`)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for v in range(version + 1, SCHEMA_VERSION + 1):
        conn.executescript(_MIGRATIONS[v])
        conn.execute(f"PRAGMA user_version={v}")
    return conn


class CallRecords:
    """Asynchronous writer of call records (methods enqueue and return at once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conn = connect(self.path)
        self._queue: queue.Queue[Callable[[sqlite3.Connection], Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="records-writer", daemon=False)
        self._thread.start()
        self.errors = 0

    def end_abandoned_calls(self, reason: str = "ended abnormally: telephony stopped without closing it") -> int:
        """Close every call row left open (its telephony was killed); returns how many.

        Run once at start-up, before any call is accepted: no call is live then, so an open row
        can only be one whose process died mid-call. Its turns were committed one by one and stay.
        """
        cur = self._conn.execute("UPDATE calls SET ended_at = ?, end_reason = ? WHERE ended_at IS NULL",
                                 (time.time(), reason))
        if cur.rowcount:
            log.warning("%d call(s) left open by a previous telephony marked %r", cur.rowcount, reason)
        return int(cur.rowcount)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job(self._conn)
            except sqlite3.Error:
                self.errors += 1
                log.exception("call record write failed")

    def call_started(self, on_id: Callable[[int], None], **fields: Any) -> None:
        """Insert a call row; `on_id` gets its id (called on the writer thread)."""

        def job(conn: sqlite3.Connection) -> None:
            cols = ["started_at", *fields]
            cur = conn.execute(
                f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [time.time(), *fields.values()],
            )
            on_id(int(cur.lastrowid))

        self._queue.put(job)

    def call_ended(self, row_id: Callable[[], int | None], reason: str, **counts: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            rid = row_id()
            if rid is None:
                return
            sets = ", ".join(f"{k} = ?" for k in counts)
            conn.execute(
                f"UPDATE calls SET ended_at = ?, end_reason = ?{', ' + sets if sets else ''} WHERE id = ?",
                [time.time(), reason, *counts.values(), rid],
            )

        self._queue.put(job)

    def turn(self, row_id: Callable[[], int | None], turn_id: int, role: str, text: str, *,
             heard_text: str | None = None, interrupted: bool = False, fallback: bool = False,
             stamps: TurnStamps | Mapping[str, int] | None = None) -> None:
        """Append one turn (caller or agent) with whatever timing stamps it has."""
        if isinstance(stamps, TurnStamps):
            stamps = stamps.known()
        stamps = {k: v for k, v in (stamps or {}).items() if k in STAMPS and v}

        def job(conn: sqlite3.Connection) -> None:
            rid = row_id()
            if rid is None:
                return
            cols = ["call_id", "turn_id", "role", "text", "heard_text", "interrupted", "fallback", "created_at", *stamps]
            vals = [rid, turn_id, role, text, heard_text, int(interrupted), int(fallback), time.time(), *stamps.values()]
            conn.execute(f"INSERT INTO turns ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals)

        self._queue.put(job)

    def event(self, row_id: Callable[[], int | None], kind: str, detail: str = "") -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO call_events (call_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                         (row_id(), time.time(), kind, detail))

        self._queue.put(job)

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until everything queued so far is written."""
        done = threading.Event()
        self._queue.put(lambda _conn: done.set())
        done.wait(timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(10)
        self._conn.close()


def recent_calls(conn: sqlite3.Connection, limit: int = 20) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM calls ORDER BY id DESC LIMIT ?", (limit,)).fetchall()


def find_call(conn: sqlite3.Connection, sid: str | None) -> sqlite3.Row | None:
    """A call by Twilio call SID, stream SID or numeric id; the latest when `sid` is None."""
    if sid is None:
        return conn.execute("SELECT * FROM calls ORDER BY id DESC LIMIT 1").fetchone()
    return conn.execute(
        "SELECT * FROM calls WHERE call_sid = ? OR stream_sid = ? OR CAST(id AS TEXT) = ? ORDER BY id DESC LIMIT 1",
        (sid, sid, sid),
    ).fetchone()


def call_turns(conn: sqlite3.Connection, call_row_id: int) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM turns WHERE call_id = ? ORDER BY id", (call_row_id,)).fetchall()

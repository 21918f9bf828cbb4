"""Call records: calls, and every turn with its text, what was heard, and timings.

In SQLite (one box, `sqlite:///data/calls.db`) or PostgreSQL (several boxes sharing one
database, `postgresql://user@host:port/db`); see `voicecall/storage/`. Writes go through one
writer thread, so the telephony event loop never waits on the database, and each is committed at
once, so a crash loses nothing already written. Each call row names the instance that served it.

When PostgreSQL goes away mid-run, calls go on: records wait in a bounded buffer
(`records.buffer_max`) while the writer reconnects with back-off, and are written in order when
it is back; a record that finds the buffer full is dropped and counted. `/metrics` shows the
buffer, the connection and both counts.

Readers (`tools/calls.py`, `tools/trace.py`, the `/calls` page) open their own connections.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from voicecall.latency import TurnStamps
from voicecall.storage.engine import Db, RecordsUnavailable, RecordsUrl, connect
from voicecall.storage.migrations import (
    SCHEMA_VERSION,
    STAMPS,
    TOOL_CALLS_VERSION,
    SchemaTooNew,
    current_version,
    migrate,
)

log = logging.getLogger("voicecall.records")

__all__ = [
    "SCHEMA_VERSION", "STAMPS", "CallRecords", "RecordsUnavailable", "SchemaTooNew", "call_as_dict", "call_turns", "connect",
    "call_tool_calls", "find_call", "open_records", "recent_calls",
]

Job = Callable[[Db], Any]
#: Reconnect back-off while the database is unreachable, seconds (doubles up to the max).
RECONNECT_FIRST_S = 0.25
RECONNECT_MAX_S = 5.0


def open_records(url: str, *, password_env: str = "", instance: str = "", connect_timeout_s: float = 5.0) -> Db:
    """Connect and migrate (start-up). Raises RecordsUnavailable or SchemaTooNew with a clear message."""
    db = connect(url, password_env=password_env, connect_timeout_s=connect_timeout_s)
    try:
        applied = migrate(db, instance)
    except BaseException:
        db.close()
        raise
    if applied:
        log.info("records %s: applied schema migration(s) %s", db.where, applied)
    return db


class CallRecords:
    """Asynchronous writer of call records (methods enqueue and return at once)."""

    def __init__(self, url: str, *, instance: str = "", password_env: str = "", buffer_max: int = 10_000,
                 connect_timeout_s: float = 5.0) -> None:
        self.target = RecordsUrl.parse(str(url))
        self.instance = instance or socket.gethostname()
        self._password_env = password_env
        self._connect_timeout_s = connect_timeout_s
        self._db: Db | None = open_records(self.target.url, password_env=password_env, instance=self.instance,
                                           connect_timeout_s=connect_timeout_s)
        self.where = self._db.where
        self.buffer_max = buffer_max
        self._jobs: deque[Job] = deque()
        self._cv = threading.Condition()
        self._submitted = 0
        self._finished = 0
        self._closing = False
        self._give_up_at = float("inf")
        #: Counters for /metrics: failed statements, records dropped on a full buffer, connections lost.
        self.errors = 0
        self.dropped = 0
        self.disconnects = 0
        self._thread = threading.Thread(target=self._run, name="records-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ state for /metrics

    @property
    def connected(self) -> bool:
        return self._db is not None

    def buffered(self) -> int:
        """Records waiting to be written (including the one being written)."""
        return self._submitted - self._finished

    # ------------------------------------------------------------------ the writer thread

    def _submit(self, job: Job) -> None:
        with self._cv:
            if self._submitted - self._finished >= self.buffer_max:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.error("records buffer full (%d, records.buffer_max): %d record(s) dropped so far",
                              self.buffer_max, self.dropped)
                return
            self._jobs.append(job)
            self._submitted += 1
            self._cv.notify_all()

    def end_abandoned_calls(self, reason: str = "ended abnormally: telephony stopped without closing it") -> int:
        """Close this instance's call rows left open (its telephony was killed); returns how many.

        Run once at start-up, before any call is accepted: no call of ours is live then, so an open
        row of this instance can only be one whose process died mid-call. Its turns were committed
        one by one and stay. Other instances' rows are theirs: on a shared database they are live.
        """
        closed: list[int] = []

        def job(db: Db) -> None:
            rows = db.query("SELECT id FROM calls WHERE ended_at IS NULL AND instance = ?", (self.instance,))
            if rows:
                db.execute("UPDATE calls SET ended_at = ?, end_reason = ? WHERE ended_at IS NULL AND instance = ?",
                           (time.time(), reason, self.instance))
                log.warning("%d call(s) left open by a previous telephony marked %r", len(rows), reason)
            closed.append(len(rows))

        self._submit(job)
        self.flush()
        return closed[0] if closed else 0

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closing:
                    self._cv.wait()
                if not self._jobs:
                    return
                job = self._jobs[0]
            self._write(job)
            with self._cv:
                self._jobs.popleft()
                self._finished += 1
                self._cv.notify_all()

    def _write(self, job: Job) -> None:
        """Run one job, reconnecting for as long as the database is away (until close gives up)."""
        delay = RECONNECT_FIRST_S
        while True:
            db = self._db
            if db is None:
                if time.monotonic() > self._give_up_at:
                    self.dropped += 1
                    return
                db = self._reconnect()
                if db is None:
                    self._sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
            try:
                job(db)
                return
            except Exception as exc:  # noqa: BLE001 - a record must never take the writer down
                if db.lost_connection(exc):
                    self._lost(db, exc)
                    continue
                self.errors += 1
                log.exception("call record write failed")
                return

    def _lost(self, db: Db, exc: BaseException) -> None:
        self._db = None
        self.disconnects += 1
        db.close()
        log.warning("records database %s lost (%s): calls go on, records wait in a buffer of up to %d "
                    "and are written on reconnect", self.where, str(exc).strip().splitlines()[0][:200], self.buffer_max)

    def _reconnect(self) -> Db | None:
        try:
            db = open_records(self.target.url, password_env=self._password_env, instance=self.instance,
                              connect_timeout_s=self._connect_timeout_s)
        except (RecordsUnavailable, SchemaTooNew):
            return None
        self._db = db
        log.warning("records database %s is back: writing %d buffered record(s)", self.where, self.buffered())
        return db

    def _sleep(self, seconds: float) -> None:
        with self._cv:
            self._cv.wait_for(lambda: time.monotonic() > self._give_up_at, seconds)

    # ------------------------------------------------------------------ what calls record

    def call_started(self, on_id: Callable[[int], None], **fields: Any) -> None:
        """Insert a call row; `on_id` gets its id (called on the writer thread)."""
        row = {"started_at": time.time(), "instance": self.instance, **fields}

        def job(db: Db) -> None:
            rid = db.insert("calls", row)
            if row.get("call_sid"):  # an AMD verdict that came before the stream did
                db.execute("UPDATE calls SET answered_by = (SELECT answered_by FROM outbound_calls WHERE call_sid = ?)"
                           " WHERE id = ? AND answered_by IS NULL", (row["call_sid"], rid))
            on_id(rid)

        self._submit(job)

    def call_ended(self, row_id: Callable[[], int | None], reason: str, **counts: int) -> None:
        ended_at = time.time()

        def job(db: Db) -> None:
            rid = row_id()
            if rid is None:
                return
            sets = "".join(f", {k} = ?" for k in counts)
            db.execute(f"UPDATE calls SET ended_at = ?, end_reason = ?{sets} WHERE id = ?",
                       [ended_at, reason, *counts.values(), rid])

        self._submit(job)

    def turn(self, row_id: Callable[[], int | None], turn_id: int, role: str, text: str, *,
             heard_text: str | None = None, interrupted: bool = False, fallback: bool = False,
             stamps: TurnStamps | Mapping[str, int] | None = None) -> None:
        """Append one turn (caller or agent) with whatever timing stamps it has."""
        if isinstance(stamps, TurnStamps):
            stamps = stamps.known()
        row = {"turn_id": turn_id, "role": role, "text": text, "heard_text": heard_text,
               "interrupted": int(interrupted), "fallback": int(fallback), "created_at": time.time(),
               **{k: v for k, v in (stamps or {}).items() if k in STAMPS and v}}

        def job(db: Db) -> None:
            rid = row_id()
            if rid is not None:
                db.insert("turns", {"call_id": rid, **row})

        self._submit(job)

    def caller_went_on(self, row_id: Callable[[], int | None], earlier_turn: int, turn_id: int, text: str, *,
                       stamps: TurnStamps | Mapping[str, int] | None = None) -> None:
        """Caller turn `turn_id` continued `earlier_turn` (whose reply was dropped): one caller turn,
        `earlier_turn`'s row rewritten as `turn_id` with both parts' `text`, and an event saying so."""
        if isinstance(stamps, TurnStamps):
            stamps = stamps.known()
        row = {"turn_id": turn_id, "role": "caller", "text": text, "heard_text": None, "interrupted": 0,
               "fallback": 0, "created_at": time.time(), **{k: v for k, v in (stamps or {}).items() if k in STAMPS and v}}
        at = time.time()

        def job(db: Db) -> None:
            rid = row_id()
            if rid is None:
                return
            # both ids: a retry after a lost connection rewrites the row instead of adding a second
            db.execute("DELETE FROM turns WHERE call_id = ? AND role = 'caller' AND turn_id IN (?, ?)",
                       (rid, earlier_turn, turn_id))
            db.insert("turns", {"call_id": rid, **row})
            db.execute("INSERT INTO call_events (call_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                       (rid, at, "went_on", f"turn {earlier_turn} went on as turn {turn_id}"))

        self._submit(job)

    def tool_call(self, row_id: Callable[[], int | None], turn_id: int, name: str, arguments: str, result: str, *,
                  ok: bool, duration_ms: float) -> None:
        """A tool the LLM called during agent turn `turn_id`, with the result it got back."""
        row = {"turn_id": turn_id, "at": time.time(), "name": name, "arguments": arguments, "result": result,
               "ok": int(ok), "duration_ms": duration_ms}

        def job(db: Db) -> None:
            rid = row_id()
            if rid is not None:
                db.insert("tool_calls", {"call_id": rid, **row})

        self._submit(job)

    def event(self, row_id: Callable[[], int | None], kind: str, detail: str = "") -> None:
        at = time.time()

        def job(db: Db) -> None:
            db.execute("INSERT INTO call_events (call_id, at, kind, detail) VALUES (?, ?, ?, ?)",
                       (row_id(), at, kind, detail))

        self._submit(job)

    def outbound_created(self, call_sid: str, to_number: str, from_number: str, agent: str, context: str) -> None:
        """A call we placed through Twilio's REST API (before it rings)."""
        now = time.time()
        self._submit(lambda db: db.execute(
            "INSERT INTO outbound_calls (call_sid, created_at, to_number, from_number, agent, context, status, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)", (call_sid, now, to_number, from_number, agent, context, now)))

    def call_status(self, call_sid: str, status: str, answered_by: str = "", detail: str = "") -> None:
        """A Twilio status or answering-machine callback: kept, and folded into the call's rows."""
        now = time.time()

        def job(db: Db) -> None:
            db.execute("INSERT INTO call_status (call_sid, at, status, answered_by, detail) VALUES (?, ?, ?, ?, ?)",
                       (call_sid, now, status, answered_by, detail))
            if status:
                db.execute("UPDATE outbound_calls SET status = ?, updated_at = ? WHERE call_sid = ?", (status, now, call_sid))
            if answered_by:
                db.execute("UPDATE outbound_calls SET answered_by = ?, updated_at = ? WHERE call_sid = ?",
                           (answered_by, now, call_sid))
                db.execute("UPDATE calls SET answered_by = ? WHERE call_sid = ?", (answered_by, call_sid))

        self._submit(job)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far is written; False if that took longer than `timeout_s`."""
        with self._cv:
            target = self._submitted
            return self._cv.wait_for(lambda: self._finished >= target, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered (for up to `timeout_s` when the database is away), then stop."""
        with self._cv:
            self._closing = True
            self._give_up_at = time.monotonic() + timeout_s
            self._cv.notify_all()
        self._thread.join(timeout_s + 2.0)
        left = self.buffered()
        if left:
            log.error("records database %s unreachable at shutdown: %d buffered record(s) lost", self.where, left)
        if self.dropped:
            log.error("records: %d record(s) were dropped in all (buffer full or database away at shutdown)", self.dropped)
        if self._db is not None:
            self._db.close()


# ---------------------------------------------------------------------- readers


def recent_calls(db: Db, limit: int = 20) -> list[dict[str, Any]]:
    return db.query("SELECT * FROM calls ORDER BY started_at DESC, id DESC LIMIT ?", (limit,))


def find_call(db: Db, sid: str | None) -> dict[str, Any] | None:
    """A call by Twilio call SID, stream SID or numeric id; the latest when `sid` is None."""
    if sid is None:
        return db.one("SELECT * FROM calls ORDER BY started_at DESC, id DESC LIMIT 1")
    return db.one(
        "SELECT * FROM calls WHERE call_sid = ? OR stream_sid = ? OR CAST(id AS TEXT) = ? ORDER BY id DESC LIMIT 1",
        (sid, sid, sid),
    )


def call_turns(db: Db, call_row_id: int) -> list[dict[str, Any]]:
    return db.query("SELECT * FROM turns WHERE call_id = ? ORDER BY id", (call_row_id,))


def agent_turn_counts(db: Db, call_ids: list[int]) -> dict[int, int]:
    """Agent turns per call, for listings."""
    if not call_ids:
        return {}
    marks = ", ".join("?" * len(call_ids))
    rows = db.query(f"SELECT call_id, COUNT(*) AS n FROM turns WHERE role = 'agent' AND call_id IN ({marks}) "
                    "GROUP BY call_id", call_ids)
    return {int(r["call_id"]): int(r["n"]) for r in rows}


def call_tool_calls(db: Db, call_row_id: int) -> dict[int, list[dict[str, Any]]]:
    """The call's tool calls by agent turn id, in order (none in a database from before migration 3)."""
    out: dict[int, list[dict[str, Any]]] = {}
    if current_version(db) < TOOL_CALLS_VERSION:
        return out
    for r in db.query("SELECT * FROM tool_calls WHERE call_id = ? ORDER BY id", (call_row_id,)):
        out.setdefault(int(r["turn_id"]), []).append({"name": r["name"], "arguments": r["arguments"],
                                                      "result": r["result"], "ok": bool(r["ok"]),
                                                      "duration_ms": r["duration_ms"]})
    return out


def call_as_dict(db: Db, call: dict[str, Any]) -> dict[str, Any]:
    """A call row with its turns, per-turn latencies and tool calls (`voicecall calls show`, `/api/calls/{sid}`)."""
    from voicecall.latency import stage_latencies_ms

    turns = []
    tools = call_tool_calls(db, call["id"])
    for t in call_turns(db, call["id"]):
        turns.append({
            "turn": t["turn_id"], "role": t["role"], "text": t["text"], "heard": t["heard_text"],
            "interrupted": bool(t["interrupted"]), "fallback": bool(t["fallback"]), "latency_ms": stage_latencies_ms(t),
            "tools": tools.get(t["turn_id"], []) if t["role"] == "agent" else [],
        })
    return {**call, "turns": turns}

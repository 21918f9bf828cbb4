"""`records.url` -> a connection to SQLite or PostgreSQL with one way to run SQL on either.

    sqlite:///data/calls.db           relative to the working directory (sqlite:////abs/path.db: absolute)
    postgresql://user@host:5432/db    the password comes from the environment variable
                                      `records.password_env`, never from the URL or the config

SQL is written once with `?` placeholders and portable types; `Db` translates for psycopg.
Rows come back as plain dicts on both engines. Every message that names the URL masks a password.
Blocking calls: the telephony process uses them only on its records writer thread or in
`asyncio.to_thread`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "sqlite:///data/calls.db"


class RecordsUrlError(ValueError):
    """`records.url` is not a URL this module understands."""


class RecordsUnavailable(Exception):
    """The records database cannot be reached or opened (the message names the masked URL)."""


@dataclass(frozen=True)
class RecordsUrl:
    engine: str  # "sqlite" | "postgresql"
    url: str
    path: str = ""  # sqlite only

    @classmethod
    def parse(cls, url: str | Path) -> RecordsUrl:
        """A URL, or (tools' --db) a bare SQLite file path."""
        url = str(url)
        if "://" not in url:
            if not url:
                raise RecordsUrlError("records.url is empty")
            return cls("sqlite", "sqlite:///" + url, url)
        scheme = url.split("://", 1)[0].lower()
        if scheme == "sqlite":
            path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
            if not path:
                raise RecordsUrlError(f"{url!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
            return cls("sqlite", url, path)
        if scheme in ("postgresql", "postgres"):
            try:
                urlsplit(url).port  # noqa: B018 - raises on a malformed port
            except ValueError as exc:
                raise RecordsUrlError(f"{mask(url)!r}: {exc} (expected postgresql://user@host:port/database)") from None
            return cls("postgresql", url)  # libpq accepts many forms (sockets, ?host=...): it judges the rest
        raise RecordsUrlError(f"{mask(url)!r}: unsupported scheme {scheme!r} (sqlite:/// or postgresql://)")

    def masked(self) -> str:
        return mask(self.url)


def mask(url: str) -> str:
    """The URL with any password replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable records.url>"


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Db:
    """One open connection (autocommit) to either engine; `?` placeholders; rows as dicts."""

    def __init__(self, engine: str, conn: Any, where: str) -> None:
        self.engine = engine
        self.conn = conn
        self.where = where  # the masked URL, for messages

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.engine == "postgresql" else sql

    def execute(self, sql: str, params: tuple | list = ()) -> None:
        self.conn.execute(self._sql(sql), params)

    def insert(self, table: str, row: dict[str, Any]) -> int:
        """Insert one row; returns its `id`."""
        cols = ", ".join(row)
        marks = ", ".join("?" * len(row))
        if self.engine == "postgresql":
            cur = self.conn.execute(self._sql(f"INSERT INTO {table} ({cols}) VALUES ({marks}) RETURNING id"), list(row.values()))
            return int(cur.fetchone()["id"])
        cur = self.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))
        return int(cur.lastrowid)

    def query(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(self._sql(sql), params)
        return [dict(r) for r in cur.fetchall()]

    def one(self, sql: str, params: tuple | list = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def lost_connection(self, exc: BaseException) -> bool:
        """True when `exc` means the server went away (retry after reconnecting), not a bad statement."""
        if self.engine != "postgresql":
            return False
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or bool(self.conn.closed)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may complain; nothing to do
            pass


def connect(url: str | Path | RecordsUrl, *, password_env: str = "", readonly: bool = False,
            connect_timeout_s: float = 5.0) -> Db:
    """Open the records database (no migration: see `storage.migrations.migrate`).

    Raises RecordsUnavailable naming the masked URL when it cannot be reached or opened.
    """
    target = url if isinstance(url, RecordsUrl) else RecordsUrl.parse(url)
    if target.engine == "sqlite":
        return _connect_sqlite(target, readonly)
    return _connect_postgresql(target, password_env, readonly, connect_timeout_s)


def _connect_sqlite(target: RecordsUrl, readonly: bool) -> Db:
    path = Path(target.path)
    try:
        if readonly:
            if not path.exists():
                raise RecordsUnavailable(f"records.url {target.url}: {path} does not exist (no call recorded yet?)")
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
    except (sqlite3.Error, OSError) as exc:
        raise RecordsUnavailable(f"records.url {target.url}: cannot open {path}: {exc}") from None
    conn.row_factory = sqlite3.Row
    return Db("sqlite", conn, target.url)


def _wal(conn: sqlite3.Connection, tries: int = 50) -> None:
    """Switch to WAL; the switch does not wait on the busy timeout, so retry while another
    connection holds a lock (a second writer opening the same file at the same moment)."""
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.1)


def _connect_postgresql(target: RecordsUrl, password_env: str, readonly: bool, timeout_s: float) -> Db:
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        raise RecordsUnavailable(
            f"records.url {target.masked()}: PostgreSQL needs the psycopg package (pip install 'psycopg[binary]')") from None
    password = os.environ.get(password_env, "") if password_env else ""
    # Keepalives and a TCP user timeout: a server that vanishes without a reset (a partition, a
    # dead host) fails the writer's statement within ~10 s instead of the kernel's minutes, so
    # records start buffering and the loss shows on /metrics.
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row, "connect_timeout": max(1, round(timeout_s)),
                              "application_name": "voicecall", "keepalives": 1, "keepalives_idle": 5,
                              "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10_000}
    if password:
        kwargs["password"] = password
    if readonly:
        kwargs["options"] = "-c default_transaction_read_only=on"
    try:
        conn = psycopg.connect(target.url, **kwargs)
    except psycopg.Error as exc:
        secrets = [password, urlsplit(target.url).password or ""]
        detail = _scrub(" ".join(str(exc).split()), secrets)
        raise RecordsUnavailable(f"records.url {target.masked()}: cannot connect: {detail}") from None
    return Db("postgresql", conn, target.masked())

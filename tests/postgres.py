"""A real PostgreSQL for tests: initdb in a temporary directory, pg_ctl on a free port, stopped afterwards.

Run as root, the server runs as the unprivileged `postgres` user (PostgreSQL refuses root).
It listens on 127.0.0.1 only (no Unix socket) and requires a password over TCP (scram), so the
tests exercise `records.password_env` for real. `stop()`/`start()` let a test take it away
mid-run and bring it back on the same port with the same data.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "voicecall"
PASSWORD = "s3cret-test-pw"  # a test server on loopback; the tests check it never reaches a log
PASSWORD_ENV = "VOICECALL_TEST_DB_PASSWORD"


def find_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<major>/bin (newest), else wherever initdb is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def why_unavailable() -> str | None:
    """None when a server can be started here, else the reason (a test skip message)."""
    if find_bindir() is None:
        return ("PostgreSQL is not installed (Debian package `postgresql`; `make install` runs "
                "tools/install_system_deps.py, which installs it when run as root)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no unprivileged `postgres` user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster; `url(db)` gives a records.url for a database in it."""

    def __init__(self) -> None:
        bindir = find_bindir()
        assert bindir is not None, why_unavailable()
        self.bindir = bindir
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="vc-pg-"))  # not under pytest's 0700 root-owned tmp
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._user:
            os.chown(pwfile, pwd.getpwnam(self._user).pw_uid, -1)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions")
        pwfile.unlink()
        self.start()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bindir / tool), *args], user=self._user, capture_output=True, text=True,
                              check=check, timeout=120, cwd=self.root)

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=50")
        proc = self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts,
                         check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {proc.stdout}{proc.stderr}\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def url(self, database: str = "postgres", with_password: bool = False) -> str:
        auth = f"{USER}:{PASSWORD}" if with_password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh database; returns its records.url (password not in it: PASSWORD_ENV holds it)."""
        import psycopg

        with psycopg.connect(self.url("postgres", with_password=True), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

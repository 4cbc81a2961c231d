"""A throwaway PostgreSQL server for tests: Debian's server binaries, a cluster in a temp dir, a free port.

Unit and integration tests share it through the session fixture `postgres` (tests/conftest.py); each test
takes a fresh database from `PostgresServer.database()`. Nothing here needs a server installed as a service.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

MISSING = "PostgreSQL server binaries not found: `apt-get install -y postgresql` (.ci/run does this)"
# An offbeat server time zone on purpose: code that relies on the database's zone shows up in the tests.
SERVER_TIMEZONE = "Pacific/Chatham"


def find_bin_dir() -> Path:
    """The newest Debian PostgreSQL's bin directory (initdb, pg_ctl), or an error saying how to install it."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found or not Path(found[-1]).with_name("initdb").exists():
        raise RuntimeError(MISSING)
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster owned by the test run: `start()`, `database()` per test, `stop()`."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        # PostgreSQL refuses to run as root: then the server runs as Debian's `postgres` user, which must
        # own the directory and reach it (pytest's tmp dirs under /tmp/pytest-of-root are root-only).
        self._as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="corral-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self.port = 0

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}{self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.root / "server.log"
        return f"\nserver log:\n{log.read_text()[-2000:]}" if log.exists() else ""

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        for attempt in range(3):  # the free port may be taken between choosing it and binding it
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sockets} "
                f"-c timezone={SERVER_TIMEZONE} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                log = str(self.root / "server.log")
                self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True)

    @contextmanager
    def database(self) -> Iterator[str]:
        """A new empty database for one test, its SQLAlchemy URL; dropped afterwards, connections or not."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            # ICU's en-US collation, as servers set up for people have, not the C of this cluster: names then
            # sort differently than on SQLite ('a_b' < 'a-b' < 'a1'), which the registry must not depend on.
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                ).format(sql.Identifier(name))
            )
        try:
            yield self.url(name)
        finally:
            with self._admin() as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()

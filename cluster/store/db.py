"""Engine and sessions for the registry database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cluster.store import migrate
from pipelines.errors import Conflict


def make_engine(url: str) -> Engine:
    """The engine, on a schema migrated to this code's head. SQLite gets WAL so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record):  # type: ignore[no-untyped-def]
            cursor = conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """Transactions over the registry: one `with db.session() as s:` is one atomic change."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction. A unique key that another transaction took first (two uploads making the same
        version at once) is a Conflict to retry, not a crash."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except IntegrityError as exc:
            raise Conflict("another change wrote the same record at the same time: retry the request") from exc

    def close(self) -> None:
        """Close the pooled connections (a server database can then be dropped or restarted)."""
        self.engine.dispose()

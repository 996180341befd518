"""The durable store: engine, sessions, migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .errors import DatabaseUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """One engine per process, and short transactions from it."""

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.url = url
        options: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            _ensure_sqlite_dir(url)
            options["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            options.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: Engine = create_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise DatabaseUnavailable(f"database: {type(exc.orig).__name__}") from exc

    def ping(self) -> None:
        with self.session() as session:
            session.execute(text("select 1"))

    def upgrade(self) -> None:
        """Apply every migration not applied yet (idempotent)."""
        with self.engine.begin() as connection:
            config = alembic_config(self.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets the demo's threads read while one writes; busy_timeout queues writers.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # SQLite's advice for WAL: NORMAL syncs at checkpoints, not at every commit, and the
    # database stays consistent through a crash; a power cut may lose the last commits
    # (an audit event, or the note of a grant: that membership then stays in the LMS).
    # FULL (the default) cost an fsync per login, about a third of a returning login's
    # time; a deployment that cannot lose one is on PostgreSQL (docs/operations.md).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()

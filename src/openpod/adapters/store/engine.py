"""Engines, sessions and migrations for SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


class StoreError(Exception):
    """A database failure, translated from SQLAlchemy's own exceptions."""


class DuplicateError(StoreError):
    """A row breaks a uniqueness rule (the same SSH key twice, ...)."""


def _normalise(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def make_engine(url: str, *, writer: bool = True) -> Engine:
    """An engine; SQLite gets WAL, foreign keys, a busy timeout and write-locking transactions.

    SQLite writer transactions start with BEGIN IMMEDIATE so that two writers (say, two pod
    creates racing for the last GPU) are serialised at BEGIN instead of failing at COMMIT;
    reader transactions start with a plain BEGIN and, under WAL, never wait for a writer.
    """
    url = _normalise(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` with Alembic."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _normalise(url).replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, revision)


class Database:
    """One engine and its session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if self.dialect == "sqlite":
            self._read_engine: Engine | None = make_engine(url, writer=False)
            self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        else:
            self._read_engine, self._read_sessions = None, self._sessions

    @contextmanager
    def transaction(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error.

        `readonly` transactions must not write; on SQLite they do not take the write lock.
        """
        session = self._read_sessions() if readonly else self._sessions()
        try:
            with session.begin():
                yield session
        except exc.IntegrityError as error:
            raise DuplicateError(str(error.orig).splitlines()[0]) from error
        except exc.OperationalError as error:
            raise StoreError(f"database error: {str(error.orig).splitlines()[0]}") from error
        finally:
            session.close()

    async def run(self, fn: Callable[[Session], T], *, readonly: bool = False) -> T:
        """`fn` in one transaction on a worker thread: the store is synchronous, its async
        callers (the hubs, the payment gateway, the wallet watch) must not block the loop."""

        def work() -> T:
            with self.transaction(readonly=readonly) as session:
                return fn(session)

        return await asyncio.to_thread(work)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._read_engine is not None:
            self._read_engine.dispose()

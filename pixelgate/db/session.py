"""Database engine, sessions and migrations (Alembic, applied at start-up)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc as sa_exc, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from pixelgate.errors import DatabaseUnavailable

log = logging.getLogger("pixelgate.db")

MIGRATIONS = Path(__file__).parent / "migrations"
_ADVISORY_LOCK = 0x70786774  # "pxgt": serializes migrations of instances starting together


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            # WAL lets readers and one writer work at once across worker processes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # pre-ping: a pooled connection the server dropped (a restart, a fail-over, a terminated
    # backend) is found dead and replaced before a request uses it
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


_GONE_SQLSTATES = ("08", "53", "57", "3D")
"""PostgreSQL error classes that say the server, not our SQL, is the problem: connection
exception, insufficient resources, operator intervention (a terminated backend, a shutdown),
no such database."""


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) means the database is gone or unreachable, rather than
    that a statement was wrong."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, sa_exc.OperationalError) and _our_sql(seen):
            return False
        if (isinstance(seen, (ConnectionError, sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError))
                or getattr(seen, "connection_invalidated", False)
                or str(getattr(seen, "sqlstate", None) or "")[:2] in _GONE_SQLSTATES):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    return False


def _our_sql(exc: BaseException) -> bool:
    """SQLite reports a missing table or a bad statement as an OperationalError too, though it
    is the schema or our SQL that is wrong, not the database that is gone (PostgreSQL says so
    with a ProgrammingError)."""
    message = str(getattr(exc, "orig", None) or exc).lower()
    return message.startswith(("no such table", "no such column")) or "syntax error" in message


def as_unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    """The 503 for a database failure (logged in one line), or None for anything else."""
    if not unavailable(exc):
        return None
    log.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip()
                else exc.__class__.__name__)
    return DatabaseUnavailable("The database is unavailable; nothing was charged. Try again shortly.")


async def read_rows(sessions: async_sessionmaker, statement: Any, *, scalars: bool = False) -> list:
    """Every row of a read-only statement. A connection dropped under it is retried once on a
    fresh one: the statement wrote nothing, so running it again is safe."""
    try:
        return await _rows(sessions, statement, scalars)
    except Exception as exc:
        if not unavailable(exc):
            raise
    return await _rows(sessions, statement, scalars)


async def _rows(sessions: async_sessionmaker, statement: Any, scalars: bool) -> list:
    async with sessions() as session:
        result = await session.execute(statement)
        return list(result.scalars() if scalars else result)


def _alembic_config() -> Any:
    from alembic.config import Config  # imported when migrating only: ~11 MB a worker need not hold

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK})"))

        def upgrade(sync_conn) -> None:
            if _at_head(sync_conn):
                return
            from alembic import command

            cfg = _alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        await conn.run_sync(upgrade)


_REVISION = re.compile(r"^(down_)?revision\b[^=\n]*=(.*)$", re.MULTILINE)


def _head() -> str | None:
    """The newest revision, read from the migration files (None unless there is exactly one)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION.findall(path.read_text()):
            (parents if down else revisions).update(re.findall(r"['\"]([^'\"]+)['\"]", value))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(sync_conn: Any) -> bool:
    """Whether the schema is at the newest revision already, checked without Alembic: a gateway
    restarted on its database then never imports it."""
    if not inspect(sync_conn).has_table("alembic_version"):
        return False
    current = sync_conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return current == [_head()]

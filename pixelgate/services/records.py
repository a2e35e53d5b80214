"""The request log and image rows, written in small batches off the request path.

A request's answer never waits for its log row: rows are queued and inserted together, one
multi-row INSERT per table, every `interval` seconds (or sooner when many are waiting), and
flushed at shutdown.

A row carries what clients sent (a model name, an `n`), so one client must not be able to make
the batch fail for everyone in it: values are fitted to their columns first (integers clamped,
strings cut to length and stripped of NUL, which PostgreSQL refuses), and a batch that still
fails is retried a row at a time, dropping only the rows that fail alone, each with a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from decimal import Decimal

from sqlalchemy import BigInteger, Float, Integer, Numeric, String, insert
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.services.supervisor import supervise

log = logging.getLogger("pixelgate.records")


class RecordWriter:
    def __init__(self, sessions: async_sessionmaker, interval: float = 0.05, batch: int = 500) -> None:
        self._sessions = sessions
        self._interval = interval
        self._batch = batch
        self._pending: list[tuple[type, dict]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._closing = False

    def add(self, *rows: tuple[type, dict]) -> None:
        """Queue (mapped class, column values) pairs."""
        self._pending.extend((table, fit(table, values)) for table, values in rows)
        if len(self._pending) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        self._task = supervise("records", self._round, until=lambda: self._closing)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued so far; returns once it is committed, even when another
        flush had already taken some of the rows."""
        async with self._lock:
            while self._pending:
                rows, self._pending = self._pending[:self._batch], self._pending[self._batch:]
                by_table: dict[type, list[dict]] = defaultdict(list)
                for table, values in rows:
                    by_table[table].append(values)
                try:
                    async with self._sessions() as session, session.begin():
                        for table, values in by_table.items():
                            # Core executemany: the ORM's bulk path costs several times more CPU
                            await session.execute(insert(table.__table__), values)
                except Exception:  # the log must never take the gateway down; say so loudly
                    log.warning("could not write a batch of %d log rows; writing them one by one", len(rows),
                                exc_info=True)
                    await self._one_by_one(by_table)

    async def _one_by_one(self, by_table: dict[type, list[dict]]) -> None:
        for table, values in by_table.items():
            for row in values:
                try:
                    async with self._sessions() as session, session.begin():
                        await session.execute(insert(table.__table__), [row])
                except Exception:
                    log.exception("dropped a %s row that cannot be written: id=%s", table.__tablename__,
                                  row.get("id"))

    async def _round(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self._interval)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()
        await self.flush()


INT32, INT64 = 2**31 - 1, 2**63 - 1


def fit(table: type, values: dict) -> dict:
    """The row's values made storable in their columns (see the module docstring)."""
    out = dict(values)
    for column in table.__table__.columns:
        value = out.get(column.key)
        if value is None:
            continue
        kind = column.type
        if isinstance(kind, Integer) and isinstance(value, int):
            bound = INT64 if isinstance(kind, BigInteger) else INT32
            out[column.key] = max(-bound, min(bound, value))
        elif isinstance(kind, String) and isinstance(value, str):
            value = value.replace("\x00", "")
            out[column.key] = value[:kind.length] if kind.length else value
        elif isinstance(kind, Numeric) and not isinstance(kind, Float) and isinstance(value, Decimal):
            digits = (kind.precision or 38) - (kind.scale or 0)
            if not value.is_finite() or abs(value) >= Decimal(10) ** digits:
                out[column.key] = None
    return out

"""The request log and image rows, written in small batches off the request path.

A request's answer never waits for its log row: rows are queued and inserted together, one
multi-row INSERT per table, every `interval` seconds (or sooner when many are waiting), and
flushed at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker

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
        self._pending.extend(rows)
        if len(self._pending) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pixelgate-records")

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
                    log.exception("could not write %d log rows", len(rows))

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

"""Leases: how one worker of the fleet holds a row (a task, a webhook delivery) while it works.

A leasable row has `lease_until` and `lease_token`. A worker claims rows by giving those that are
free (no lease, or one that ran out) its own fresh token and a `lease_until`; every write it then
makes is conditional on that token (a fence), so a worker that stalled past its lease and was taken
over changes nothing: its write raises LeaseLost. Work that may outlast the lease renews it while
it runs (`renewing`). Claims race only in the UPDATE: each row goes to the one token that won it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable

from sqlalchemy import ColumnElement, Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pixelgate.errors import LeaseLost

log = logging.getLogger("pixelgate.leases")


def now() -> datetime:
    return datetime.now(timezone.utc)


class Leases:
    def __init__(self, sessions: async_sessionmaker, table: type, seconds: float,
                 holdable: ColumnElement[bool], name: str) -> None:
        self._sessions = sessions
        self.table = table
        self.length = timedelta(seconds=seconds)
        """How long a claimed row is one worker's alone without renewal; a worker that dies
        holding one delays it by at most this long."""
        self._holdable = holdable
        """Which rows can be held at all (a live task, an undelivered webhook): a row that left
        them is out of every lease, so a finished task fences out whoever still works on it."""
        self._name = name

    def free(self, moment: datetime) -> ColumnElement[bool]:
        """Rows no worker holds at `moment`."""
        return or_(self.table.lease_until.is_(None), self.table.lease_until < moment)

    async def claim_due(self, due: Callable[[datetime], Select]) -> tuple[list, str]:
        """Claim the rows whose ids `due(moment)` selects (at most its limit; free ones only, of
        which another worker may win some first): the rows won, and their token."""
        moment, token = now(), secrets.token_hex(16)
        async with self._sessions() as session:
            ids = list((await session.execute(due(moment))).scalars())
        if not ids:
            return [], token
        table = self.table
        async with self._sessions() as session, session.begin():
            await session.execute(update(table).where(table.id.in_(ids), self._holdable, self.free(moment))
                                  .values(lease_until=moment + self.length, lease_token=token))
        async with self._sessions() as session:
            won = await session.execute(select(table).where(table.id.in_(ids), table.lease_token == token))
            return list(won.scalars()), token

    async def claim(self, row_id: Any) -> str | None:
        """Claim one row: its token, or None if another worker holds it (or it is not holdable)."""
        token, moment = secrets.token_hex(16), now()
        async with self._sessions() as session, session.begin():
            won = await session.execute(update(self.table).where(
                self.table.id == row_id, self._holdable, self.free(moment))
                .values(lease_until=moment + self.length, lease_token=token))
        return token if won.rowcount == 1 else None

    async def write(self, row_id: Any, token: str | None, session: AsyncSession | None = None,
                    **values: Any) -> None:
        """Change a row this worker holds, in `session`'s transaction if given; LeaseLost if
        another worker took it over, or it is no longer holdable. Without a token, fenced only
        by the row being holdable, which fences out whoever holds it (a cancel)."""
        fence = [self.table.id == row_id, self._holdable] + ([self.table.lease_token == token] if token else [])
        change = update(self.table).where(*fence).values(**values).execution_options(synchronize_session=False)
        if session is not None:
            won = await session.execute(change)
        else:
            async with self._sessions() as own, own.begin():
                won = await own.execute(change)
        if won.rowcount != 1:
            raise LeaseLost(f"{self._name} {row_id} was taken over or finished by another worker.")

    @asynccontextmanager
    async def renewing(self, row_id: Any, token: str) -> AsyncIterator[None]:
        """Renew the lease while the block runs; if it cannot be renewed (another worker took
        the row over), cancel the block and raise LeaseLost."""
        current = asyncio.current_task()
        lost = False

        async def renew() -> None:
            nonlocal lost
            while True:
                await asyncio.sleep(self.length.total_seconds() / 3)
                try:
                    await self.write(row_id, token, lease_until=now() + self.length)
                except LeaseLost:
                    lost = True
                    current.cancel()
                    return
                except Exception:  # the database may be back before the lease runs out
                    log.warning("could not renew the lease of %s %s", self._name, row_id, exc_info=True)

        keeper = asyncio.create_task(renew())
        try:
            yield
        except asyncio.CancelledError:
            if lost and current.uncancel() == 0:
                raise LeaseLost(f"{self._name} {row_id} was taken over by another worker.") from None
            raise
        finally:
            keeper.cancel()

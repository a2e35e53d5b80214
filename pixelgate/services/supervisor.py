"""Every background loop of a process runs here: `supervise(name, round)` calls `round()` again
and again until it is cancelled (or `until()` is true). A round that raises is logged with its
traceback, counted in `pixelgate_background_errors_total{loop=name}`, and tried again after a
pause that doubles from 1 s up to 30 s, so a database or disk that fails for an hour neither ends
the loop (retention once stopped for the life of the process after one error) nor floods the
log. A round that has run longer than the longest pause starts the pauses over."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from pixelgate.services import metrics

log = logging.getLogger("pixelgate.background")

FIRST_PAUSE, LONGEST_PAUSE = 1.0, 30.0


def supervise(name: str, round: Callable[[], Awaitable[object]],
              until: Callable[[], bool] | None = None) -> asyncio.Task:
    """Start the loop `name` as a task; cancel the task to stop it. `round` does one round of
    work and its own waiting (a sleep, an event) before the next."""
    return asyncio.create_task(_run(name, round, until), name=f"pixelgate-{name}")


async def _run(name: str, round: Callable[[], Awaitable[object]], until: Callable[[], bool] | None) -> None:
    errors = metrics.BACKGROUND_ERRORS.labels(name)  # the series exists, at 0, from the start
    pause = FIRST_PAUSE
    while until is None or not until():
        started = time.monotonic()
        try:
            await round()
        except Exception:
            errors.inc()
            if time.monotonic() - started > LONGEST_PAUSE:
                pause = FIRST_PAUSE  # it had been working: this is a new failure, not the same one
            log.exception("background loop %s failed; trying again in %.0f s", name, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
        else:
            pause = FIRST_PAUSE

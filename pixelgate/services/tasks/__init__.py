"""Asynchronous work: tasks, exact when a process is killed at any line, across instances.

The Task row is the source of truth, and every change to it is a conditional UPDATE:

  starting  the intent, written with the request's hold in ONE transaction before any vendor
            call; the submitting request holds its lease and calls the vendor. The client has
            not been answered yet: if the process dies here, the lease runs out and whoever
            finds the row fails it and releases the hold (the client saw an error and retries).
  pending   accepted and answered. A synchronous model run as a task starts here: its request
            (input images in storage) is on the row, and any worker runs it, again after a
            crash (at most MAX_RUNS times).
  running   vendor jobs recorded on the row; any worker polls them, one at a time by lease.
            A job the vendor finished whose images the image store would not take (down, hung)
            keeps what the vendor made on the row ("made"), and is stored again at doubling waits
            by any worker, never asked of the vendor again, until task_store_retry_seconds; then
            the task fails, charged nothing (worker.py).
  succeeded / failed / canceled
            the outcome, its settlement (the ledger) and its webhook (an outbox row) are written
            in ONE transaction: there is no moment at which a task is finished but unbilled,
            billed twice, or finished unannounced.

A worker claims a task by lease (services.leases): every write it makes while it works is
conditional on its token (a fence) and the lease is renewed while the work runs. A worker that
stalls past its lease and was taken over writes nothing (LeaseLost).

Crash windows that remain, by design: a vendor that accepted a job in the instant before the
process died holding a `starting` row has a job nobody follows (the operator may pay for it;
the client is not charged). Images stored before the outcome was written are left unreferenced.

The parts: store.py writes the row (and nothing else does), worker.py is the loop that claims
due tasks and advances them, service.py is what the APIs call (submit, get, wait, cancel),
snapshot.py keeps a request on the row so that any worker can run it (and gives back its context).
"""

from pixelgate.services.tasks.service import TaskService
from pixelgate.services.tasks.snapshot import request_from_snapshot, request_snapshot
from pixelgate.services.tasks.store import LIVE, TERMINAL, TaskStore, aware
from pixelgate.services.tasks.worker import MAX_RUNS, TaskWorker

__all__ = ["LIVE", "MAX_RUNS", "TERMINAL", "TaskService", "TaskStore", "TaskWorker", "aware",
           "request_from_snapshot", "request_snapshot"]

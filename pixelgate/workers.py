"""`pixelgate serve --workers N`: N processes, each with its own listening socket on the same
port (SO_REUSEPORT), so the kernel spreads new connections evenly across them. (With one shared
socket, whichever worker wakes first takes a whole batch of connections, and they stay with it:
the benchmark saw 16 connections split 16+0, leaving a core idle.) The workers are forked from
a supervisor that imported the application once, so they share its code and data."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any


def _socket(host: str, port: int, share: bool = True) -> socket.socket:
    """A listening socket; `share`: with SO_REUSEPORT, for the workers of one server. Without it
    the bind fails while anything else listens there, another pixelgate included (two servers
    that both set SO_REUSEPORT would silently split the port's connections between them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_port(host: str, port: int) -> None:
    """Raise the OSError serving would meet (the port taken, the address not this machine's),
    before anything is prepared for serving."""
    _socket(host, port, share=False).close()


def keep_freed_memory() -> None:
    """Let glibc's malloc keep the memory of freed images for the next ones. By default each
    buffer over 128 KB is a fresh mmap, and freed heap is soon given back to the kernel, so every
    1.5 MB image costs page faults and zeroing, twice or three times: 20 % fewer requests per
    second in the benchmark. Bounded: at most TRIM of free heap is kept per arena."""
    mmap_threshold, trim_threshold = -3, -1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD in <malloc.h>
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(mmap_threshold, 32 * 1024 * 1024)  # 32 MiB is glibc's ceiling for it
        libc.mallopt(trim_threshold, 128 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators differ anyway
        pass


def _config(options: dict[str, Any]) -> Any:
    """uvicorn's Config for the gateway; `header_timeout` (seconds) bounds how long a client may
    take to send its request headers (pixelgate/httpserver.py)."""
    import uvicorn

    from pixelgate.httpserver import HEADER_TIMEOUT, protocol

    options = dict(options)
    options["http"] = protocol(options.get("http", "auto"), options.pop("header_timeout", HEADER_TIMEOUT))
    options.setdefault("ws", "none")  # no route takes a websocket: 4 MB of websockets a worker need not load
    return uvicorn.Config("pixelgate.app:app_from_environment", factory=True, **options)


def _worker(host: str, port: int, options: dict[str, Any]) -> None:
    _serve_on(_socket(host, port), options)


def _serve_on(sock: socket.socket, options: dict[str, Any]) -> None:
    import uvicorn

    keep_freed_memory()
    uvicorn.Server(_config(options)).run(sockets=[sock])


def serve_one_from_argv() -> None:
    """The one-worker server, in the interpreter `serve` became once its checks were done. A stop
    asked for before uvicorn listens ends it by that signal (nothing was started to stop)."""
    _stops_end_the_process()
    plan = json.loads(sys.argv[1])
    _serve_on(socket.socket(fileno=plan["listen"]), plan["options"])


def serve(host: str, port: int, workers: int, on_bound: Any = None, **options: Any) -> None:
    """Run `workers` server processes until SIGINT/SIGTERM, restarting none: a worker that dies
    takes the whole server down, so a supervisor (systemd, the orchestrator) restarts it cleanly.
    `on_bound(port)` runs once the port is ours (an OSError before it says why it is not); the
    port is the one bound, which --port 0 leaves to the system."""
    if workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        sock = _socket(host, port, share=False)
        if on_bound is not None:
            on_bound(sock.getsockname()[1])
        try:  # as a fresh interpreter: the checks' garbage, and Alembic if they migrated, left behind
            _exec_self("serve_one_from_argv", {"listen": sock.fileno(), "options": options})
        except OSError:  # no exec that keeps the process (a frozen build, Windows): serve from here
            _serve_on(sock, options)
        return
    with _socket(host, port, share=False) as alone:  # fail here, in the parent, if the port is taken
        port = alone.getsockname()[1]
    probe = _socket(host, port)  # held while the workers bind beside it
    _hold_stops()
    if on_bound is not None:
        on_bound(port)
    _become_supervisor(probe, host, port, workers, options)


def _become_supervisor(probe: socket.socket, host: str, port: int, workers: int, options: dict[str, Any]) -> None:
    """Go on as a fresh interpreter: the command that checked the configuration and the database
    ran an event loop, threads and connections (S3's client runs a thread pool), after which a
    fork is unsafe, and holds garbage of that work. The fresh one imports the application, starts
    nothing of it, and forks the workers. Same process id, so signals and
    supervisors still reach it; the probe socket is inherited by its descriptor."""
    plan = {"probe": probe.fileno(), "host": host, "port": port, "workers": workers, "options": options}
    try:
        _exec_self("supervise_from_argv", plan)
    except OSError:  # no exec that keeps the process (a frozen build, Windows): supervise from here
        supervise(probe, host, port, workers, options)


def _exec_self(entry: str, plan: Any) -> None:
    """Become a fresh interpreter (same pid, same descriptors, same signal mask) that runs this
    module's `entry` with `plan` as JSON in its argv; raises OSError only."""
    if os.name != "posix":  # Windows' exec starts another process (another pid) and ends this one
        raise OSError("exec does not keep the process here")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # exec drops what is buffered
    for signum in _held:  # pending on this thread (blocked), it outlives exec
        signal.pthread_kill(threading.get_ident(), signum)
    os.execv(sys.executable, [sys.executable, "-c", f"from pixelgate.workers import {entry}; {entry}()",
                              json.dumps(plan), *_command()])


def _command() -> list[str]:
    """The command the operator ran (`pixelgate serve --port 8080`), carried along after the plan
    through every exec, so that `ps` and `pkill -f "pixelgate serve"` still find the server."""
    return sys.argv[2:] if sys.argv[:1] == ["-c"] else sys.argv


_STOPS = {signal.SIGINT, signal.SIGTERM}
"""The signals that stop the server."""
_held: list[int] = []
"""Stops asked for while they were held (_hold_stops)."""


def _hold_stops() -> None:
    """From the moment `serve` says it listens until the watcher listens, a stop must neither kill
    the process half-way (workers forked, no watcher) nor be lost. Blocked, it waits on this thread
    across both execs, which keep the mask and what is pending. Only another thread could take it
    meanwhile: the threads of the checks (the database's) are waited for first; one that stays (an
    S3 client's pool) has it recorded by a handler and raised again on this thread before exec,
    which leaves a window of microseconds in which it could be lost."""
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main:
            thread.join(timeout=2)
    for signum in _STOPS:  # before blocking, so that no thread ever meets the default action (death)
        signal.signal(signum, lambda taken, _frame: _held.append(taken))
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)


def _stops_end_the_process() -> None:
    """In a process about to serve: until uvicorn's handlers are in place, a Ctrl-C or SIGTERM ends
    it by that signal, as a stop (Python's own SIGINT handler would print a traceback); and stops
    held since `serve` (_hold_stops) are let through."""
    for signum in _STOPS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)


def supervise_from_argv() -> None:
    plan = json.loads(sys.argv[1])
    probe = socket.socket(fileno=plan["probe"])
    supervise(probe, plan["host"], plan["port"], plan["workers"], plan["options"])


def supervise(probe: socket.socket, host: str, port: int, workers: int, options: dict[str, Any]) -> None:
    """Import the application once, fork the workers from it, and watch them. The stop signals are
    blocked (since `serve`) until the watcher listens: a stop asked for meanwhile is never lost nor
    fatal."""
    _preload()
    pids = [_fork_worker(host, port, options, probe) for _ in range(workers)]
    probe.close()
    _become_watcher(pids)


def _preload() -> None:
    """Import what every worker runs, once, before forking them: its code and data are then one
    copy shared by every worker, copy-on-write, instead of one per worker. Then keep the collector
    away from it, so that no collection writes to the shared pages."""
    import pixelgate.app  # noqa: F401
    import pixelgate.httpserver  # noqa: F401
    import uvicorn  # noqa: F401

    gc.collect()
    gc.freeze()


def _fork_worker(host: str, port: int, options: dict[str, Any], probe: socket.socket) -> int:
    """A worker forked from a process that imported the application and started nothing of it
    (no event loop, no thread, no connection); its pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 1  # the worker: serve, then leave without running the supervisor's code
    try:
        probe.close()  # in the port's group, the kernel would hand it connections nobody accepts
        _stops_end_the_process()
        _worker(host, port, options)
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _become_watcher(pids: list[int]) -> None:
    """Once the workers are forked the supervisor needs none of the application: it goes on as a
    fresh interpreter again (same pid; the workers stay its children), and the imported pages are
    the workers' alone to share. A stop asked for meanwhile waits, blocked, until the watcher
    listens (the signal mask outlives exec)."""
    try:
        _exec_self("watch_from_argv", pids)
    except OSError:  # no exec that keeps the process (a frozen build, Windows): watch from here
        watch(pids)


def watch_from_argv() -> None:
    watch(json.loads(sys.argv[1]))


class _Child:
    """A forked worker, watched as a subprocess.Popen would be."""

    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.returncode


def watch(pids: list[int]) -> None:
    """Until every worker has ended: a stop asked for goes to each; one that dies stops the rest."""
    children = [_Child(pid) for pid in pids]
    asked_to_stop: list[int] = []

    def stop_all() -> None:
        for child in children:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGTERM)

    def on_signal(signum: int, _frame: Any) -> None:
        asked_to_stop.append(signum)
        stop_all()

    for signum in _STOPS:
        signal.signal(signum, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    for signum in _held:  # taken while held, in this same image (no exec: a frozen build)
        on_signal(signum, None)
    while any(c.poll() is None for c in children):
        for child in children:
            child.wait(timeout=0.5)
            if child.returncode not in (None, 0) and any(c.poll() is None for c in children):
                stop_all()  # one died: stop the rest, exit non-zero
    sys.exit(_exit_status([c.returncode for c in children], bool(asked_to_stop)))


def _exit_status(exit_codes: list[int | None], asked_to_stop: bool) -> int:
    """0 when every worker ended well. A worker that shut down on SIGTERM ends by that signal
    (uvicorn re-raises it once it has finished): a clean stop when the server was asked to stop,
    a failure when it was not (a worker killed from outside). A failure exits 1 or the worker's
    own status, never a negative number wrapped into 241."""
    clean = (0, -signal.SIGTERM, -signal.SIGINT) if asked_to_stop else (0,)
    if all(code in clean for code in exit_codes):
        return 0
    return max((code for code in exit_codes if code and code > 0), default=1)

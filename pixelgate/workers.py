"""`pixelgate serve --workers N`: N processes, each with its own listening socket on the same
port (SO_REUSEPORT), so the kernel spreads new connections evenly across them. (With one shared
socket, whichever worker wakes first takes a whole batch of connections, and they stay with it:
the benchmark saw 16 connections split 16+0, leaving a core idle.)"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
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
    import uvicorn

    keep_freed_memory()
    uvicorn.Server(_config(options)).run(sockets=[_socket(host, port)])


def serve(host: str, port: int, workers: int, on_bound: Any = None, **options: Any) -> None:
    """Run `workers` server processes until SIGINT/SIGTERM, restarting none: a worker that dies
    takes the whole server down, so a supervisor (systemd, the orchestrator) restarts it cleanly.
    `on_bound(port)` runs once the port is ours (an OSError before it says why it is not); the
    port is the one bound, which --port 0 leaves to the system."""
    if workers == 1 or not hasattr(socket, "SO_REUSEPORT"):
        import uvicorn

        keep_freed_memory()
        sock = _socket(host, port, share=False)
        if on_bound is not None:
            on_bound(sock.getsockname()[1])
        uvicorn.Server(_config(options)).run(sockets=[sock])
        return
    with _socket(host, port, share=False) as alone:  # fail here, in the parent, if the port is taken
        port = alone.getsockname()[1]
    probe = _socket(host, port)  # held while the workers bind beside it
    if on_bound is not None:
        on_bound(port)
    _become_supervisor(probe, host, port, workers, options)


def _become_supervisor(probe: socket.socket, host: str, port: int, workers: int, options: dict[str, Any]) -> None:
    """Go on as a fresh interpreter that imports only this module: the command that checked the
    configuration and the database holds the whole application (~90 MiB) it would otherwise keep
    for nothing while the workers serve. Same process id, so signals and supervisors still
    reach it; the probe socket is inherited by its descriptor."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # exec drops what is buffered
    plan = json.dumps({"probe": probe.fileno(), "host": host, "port": port, "workers": workers, "options": options})
    try:
        os.execv(sys.executable, [sys.executable, "-c", "from pixelgate.workers import supervise_from_argv; "
                                  "supervise_from_argv()", plan])
    except OSError:  # no interpreter to exec (a frozen build): supervise from here
        supervise(probe, host, port, workers, options)


def supervise_from_argv() -> None:
    plan = json.loads(sys.argv[1])
    probe = socket.socket(fileno=plan["probe"])
    supervise(probe, plan["host"], plan["port"], plan["workers"], plan["options"])


def _start_worker(host: str, port: int, options: dict[str, Any]) -> subprocess.Popen:
    """A worker: a fresh interpreter running _worker. (multiprocessing's spawn would also start
    its resource tracker, a third process of 13 MiB that tracks nothing of ours.)"""
    plan = json.dumps({"host": host, "port": port, "options": options})
    return subprocess.Popen([sys.executable, "-c", "from pixelgate.workers import work_from_argv; work_from_argv()",
                             plan])


def work_from_argv() -> None:
    plan = json.loads(sys.argv[1])
    _worker(plan["host"], plan["port"], plan["options"])


def supervise(probe: socket.socket, host: str, port: int, workers: int, options: dict[str, Any]) -> None:
    processes = [_start_worker(host, port, options) for _ in range(workers)]
    probe.close()

    asked_to_stop: list[int] = []

    def stop_all() -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def on_signal(signum: int, _frame: Any) -> None:
        asked_to_stop.append(signum)
        stop_all()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while any(p.poll() is None for p in processes):
        for process in processes:
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
            if process.returncode not in (None, 0) and any(p.poll() is None for p in processes):
                stop_all()  # one died: stop the rest, exit non-zero
    sys.exit(_exit_status([p.returncode for p in processes], bool(asked_to_stop)))


def _exit_status(exit_codes: list[int | None], asked_to_stop: bool) -> int:
    """0 when every worker ended well. A worker that shut down on SIGTERM ends by that signal
    (uvicorn re-raises it once it has finished): a clean stop when the server was asked to stop,
    a failure when it was not (a worker killed from outside). A failure exits 1 or the worker's
    own status, never a negative number wrapped into 241."""
    clean = (0, -signal.SIGTERM, -signal.SIGINT) if asked_to_stop else (0,)
    if all(code in clean for code in exit_codes):
        return 0
    return max((code for code in exit_codes if code and code > 0), default=1)

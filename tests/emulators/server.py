"""Run an ASGI app on loopback for the duration of a ``with`` block.

Test emulators (see ``openai_images.py``) are served through this helper so
that the code under test talks real HTTP to them::

    with serve(create_app(state)) as base_url:   # "http://127.0.0.1:54321"
        ...

The socket is bound by us to 127.0.0.1 with port 0, so the OS picks a free
port and there is no bind race; uvicorn (asyncio loop, no lifespan, warnings
only) serves it in a daemon thread.  On exit the server is asked to stop,
in-flight requests get one second to finish, and the thread is joined.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import uvicorn

__all__ = ["serve", "emulated", "QuickServer", "run_in_thread", "black_hole"]


class QuickServer(uvicorn.Server):
    """uvicorn's server, stopped in milliseconds rather than a quarter of a second: it wakes when
    told to stop (uvicorn polls for that every 0.1 s, then sleeps another 0.1 s before waiting for
    connections in 0.1 s steps). A suite starting a thousand servers spent minutes in those sleeps."""

    _loop: asyncio.AbstractEventLoop | None = None

    def stop(self) -> None:
        self.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def main_loop(self) -> None:
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not self.should_exit:
            try:  # on_tick refreshes the Date header once a second
                await asyncio.wait_for(self._stopping.wait(), 1)
            except TimeoutError:
                counter += 10
                await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle keep-alive connections close now, busy ones after their answer
        deadline = time.monotonic() + self.config.timeout_graceful_shutdown
        while (self.server_state.connections or self.server_state.tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for task in self.server_state.tasks:
            task.cancel()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


ABANDONED: list[str] = []
"""Server threads that did not stop when asked (tests.conftest.database does not hand their
database to another test: their background loops may still be using it)."""


@contextmanager
def run_in_thread(config: uvicorn.Config, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``config``'s app on 127.0.0.1:<free port> in a daemon thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = QuickServer(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"server-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("server thread died during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start within {startup_timeout}s")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(timeout=5)
        if thread.is_alive():  # a stuck connection: stop waiting for it
            server.force_exit = True
            thread.join(timeout=5)
        if thread.is_alive():  # given up on: its app may go on using what it was given
            ABANDONED.append(thread.name)
            print(f"tests: server thread {thread.name} did not stop; left running", file=sys.stderr)
        sock.close()


@contextmanager
def serve(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yield its base URL (no trailing slash)."""
    config = uvicorn.Config(app, loop="asyncio", lifespan="off", log_level="warning", access_log=False,
                            timeout_graceful_shutdown=1)
    with run_in_thread(config, startup_timeout=startup_timeout) as base:
        yield base


@contextmanager
def emulated(create_app: Any, state: Any, path: str = "") -> Iterator[tuple[Any, str]]:
    """A vendor emulator serving ``state``: yields (state, its base URL + ``path``), the pair
    each vendor's tests call ``upstream``."""
    with serve(create_app(state)) as base:
        yield state, base + path


@contextmanager
def black_hole() -> Iterator[int]:
    """A port on loopback that accepts connections and never answers: a hung server (a Redis or
    an S3 store that stopped in the middle), unlike a stopped one, which refuses at once."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in [*held, listener]:
            conn.close()

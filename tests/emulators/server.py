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

import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import uvicorn

__all__ = ["serve", "emulated"]


@contextmanager
def serve(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yield its base URL (no trailing slash)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"emulator-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("emulator server thread died during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"emulator server did not start within {startup_timeout}s")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():  # a stuck connection: stop waiting for it
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


@contextmanager
def emulated(create_app: Any, state: Any, path: str = "") -> Iterator[tuple[Any, str]]:
    """A vendor emulator serving ``state``: yields (state, its base URL + ``path``), the pair
    each vendor's tests call ``upstream``."""
    with serve(create_app(state)) as base:
        yield state, base + path

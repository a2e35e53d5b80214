"""uvicorn's HTTP protocol with a deadline on request headers.

uvicorn times out an idle keep-alive connection (timeout_keep_alive) but not one that never
finishes its headers: a new connection that sends nothing, or a byte a minute, is held until the
client leaves, and a few thousand such sockets (slowloris) use up file descriptors and memory
while costing the sender nothing. Here every request's headers must be complete within
`header_timeout` seconds of the connection opening, or of the previous response ending.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

HEADER_TIMEOUT = 10.0


def protocol(http: Any = "auto", header_timeout: float = HEADER_TIMEOUT) -> Any:
    """The protocol class (a factory uvicorn calls like one) for uvicorn's `http` option:
    httptools where installed (uvicorn's own "auto" choice), else h11."""
    if not isinstance(http, str):
        return http  # the caller chose a class of its own
    base: Any
    if http in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        except ImportError:
            if http == "httptools":
                raise
            from uvicorn.protocols.http.h11_impl import H11Protocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return functools.partial(_guarded(base), header_timeout=header_timeout)


@functools.cache
def _guarded(base: type) -> type:
    class HeaderDeadline(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, header_timeout: float = HEADER_TIMEOUT, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_timeout = header_timeout
            self._header_deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and not self.pipeline:
                self._arm()  # the next request on this connection has the same deadline

        # httptools calls on_headers_complete; h11 has no callback, so its handle_events is
        # wrapped: once a request has begun (cycle set), its headers are in.
        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def handle_events(self) -> None:
            super().handle_events()
            if getattr(self, "cycle", None) is not None and not self.cycle.response_complete:
                self._disarm()

    if not hasattr(base, "on_headers_complete"):
        del HeaderDeadline.on_headers_complete
    if not hasattr(base, "handle_events"):
        del HeaderDeadline.handle_events
    HeaderDeadline.__qualname__ = HeaderDeadline.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline

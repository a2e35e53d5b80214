"""The cheapest emulated OpenAI-compatible image upstream we could write, for benchmarks.

A raw asyncio.Protocol HTTP/1.1 keep-alive server (uvloop when installed). It parses just
enough HTTP to find the end of each request (headers + Content-Length body), ignores what
the request says, and answers every POST with one precomputed byte string:

    {"created": 1, "data": [{"b64_json": "<base64 of a real PNG>"}]}

The PNG is random noise (seeded, so every run serves the same bytes) made with Pillow, so it
does not compress; --image-bytes sets its approximate size. --delay holds each answer that
many seconds (a timer, no task per request) to emulate a slow vendor. GET /healthz answers 200;
GET /stats answers {"served", "in_flight", "peak_in_flight"} (requests held by --delay now and
at most since the last GET /stats?reset). Responses are never compressed, whatever
Accept-Encoding says.

    python bench/fast_upstream.py --port 9101 --image-bytes 4096
    python bench/fast_upstream.py --port 9102 --image-bytes 1100000   # ~1.5 MB of base64
    python bench/fast_upstream.py --port 9103 --delay 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import math
import random
import signal
import socket
import sys


def make_png(target_bytes: int, seed: int = 12345) -> bytes:
    """A real RGB PNG of random noise whose file size is close to target_bytes."""
    from PIL import Image

    side = max(1, int(math.sqrt(max(target_bytes, 3) / 3)))
    pixels = random.Random(seed).randbytes(side * side * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def build_responses(image_bytes: int) -> tuple[bytes, bytes, bytes, int]:
    png = make_png(image_bytes)
    b64 = base64.b64encode(png)
    body = b'{"created":1,"data":[{"b64_json":"' + b64 + b'"}]}'
    ok = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
          + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + body)
    health = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}"
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    return ok, health, missing, len(png)


class Upstream(asyncio.Protocol):
    __slots__ = ("transport", "buf", "loop")

    ok: bytes = b""
    health: bytes = b""
    missing: bytes = b""
    delay: float = 0.0
    served = 0
    in_flight = 0
    peak_in_flight = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def connection_lost(self, exc) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 17)
                length = int(lower[at + 17: stop if stop >= 0 else len(lower)].strip())
            total = end + 4 + length
            if len(buf) < total:
                break
            self._answer(head)
            buf = buf[total:]
        self.buf = buf

    def _answer(self, head: bytes) -> None:
        cls = Upstream
        if head.startswith(b"POST "):
            cls.served += 1
            if self.delay > 0:
                cls.in_flight += 1
                if cls.in_flight > cls.peak_in_flight:
                    cls.peak_in_flight = cls.in_flight
                self.loop.call_later(self.delay, self._later, self.ok)
                return
            reply = self.ok
        elif head.startswith(b"GET /healthz"):
            reply = self.health
        elif head.startswith(b"GET /stats"):
            body = (b'{"served":%d,"in_flight":%d,"peak_in_flight":%d}'
                    % (cls.served, cls.in_flight, cls.peak_in_flight))
            if head.startswith(b"GET /stats?reset"):
                cls.peak_in_flight = cls.in_flight
            reply = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % len(body)) + body
        else:
            reply = self.missing
        self.transport.write(reply)  # type: ignore[union-attr]

    def _later(self, reply: bytes) -> None:
        Upstream.in_flight -= 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--image-bytes", type=int, default=4096,
                        help="approximate size of the PNG (raw bytes; base64 is 4/3 of it)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to hold each answer")
    args = parser.parse_args(argv)

    try:
        import uvloop  # type: ignore

        uvloop.install()
        loop_name = "uvloop"
    except ImportError:  # pragma: no cover
        loop_name = "asyncio"

    ok, health, missing, png_size = build_responses(args.image_bytes)
    Upstream.ok, Upstream.health, Upstream.missing, Upstream.delay = ok, health, missing, args.delay

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, args.host, args.port, backlog=4096, reuse_address=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"fast_upstream: listening on http://{args.host}:{args.port} ({loop_name}), "
              f"PNG {png_size} bytes, response {len(ok)} bytes, delay {args.delay:g} s", flush=True)
        async with server:
            await stop.wait()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

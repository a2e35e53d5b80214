"""An upstream that fails on the socket is named in the answer: the channel and its host:port, so
the operator knows where to look (a channel name alone does not say which machine broke). A
timeout names the channel; the engine's own deadline, which usually fires first, knows no host."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Iterator

import pytest


@contextmanager
def misbehaving(mode: str) -> Iterator[int]:
    """A TCP server on loopback that reads a request and then closes the connection (`close`) or
    never answers (`hang`)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if mode == "close":
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                finally:
                    conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def _channel(name: str, base_url: str) -> dict:
    return {"name": name, "provider": "openai-compatible", "api_key": "k", "base_url": base_url,
            "models": [name], "timeout_seconds": 1}


@pytest.mark.parametrize("mode, scheme, code, says", [
    ("close", "http", "upstream_bad_response", "at {address} broke the connection: ServerDisconnectedError"),
    ("close", "https", "upstream_unavailable", "at {address}: ConnectionResetError"),  # TLS handshake cut short
    ("hang", "http", "upstream_timeout", "did not answer in time"),
])
def test_socket_failures_name_channel_host_and_port(make_gateway, mode, scheme, code, says):
    with misbehaving(mode) as port:
        gateway = make_gateway(channels=[_channel("flaky", f"{scheme}://127.0.0.1:{port}/v1")])
        with gateway.http() as client:
            resp = client.post("/v1/images/generations", json={"model": "flaky", "prompt": "x"})
    error = resp.json()["error"]
    assert error["code"] == code, error
    assert "channel 'flaky'" in error["message"], error
    assert says.format(address=f"127.0.0.1:{port}") in error["message"], error

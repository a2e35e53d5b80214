"""How upstream calls travel: HTTP through one pooled aiohttp session, or in-process to the
sandbox, or (with simulate_vendors) to a simulated vendor's emulator. All answer UpstreamReply;
foreign exceptions are translated at one place, `upstream_errors()`, into UpstreamError classes.

Nothing a vendor sends is read without a bound: every answer, stream and image download stops at
`max_bytes` (upstream_max_bytes) with UpstreamBadResponse, and image URLs a vendor hands us are
downloaded through the SSRF-guarded fetcher (services/fetch.py), not this pool."""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
from typing import Any, AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import aiohttp
import orjson
import yarl

from pixelgate.errors import (UpstreamBadResponse, UpstreamError, UpstreamTimeout,
                              UpstreamUnavailable)
from pixelgate.providers.base import FilePart, UpstreamCall, UpstreamReply
from pixelgate.services.fetch import Fetcher, FetchError, TooLarge, outbound_session, read_capped

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class _Failed(Exception):
    """A socket or client-library failure of a call to `address` (host:port), raised by the HTTP
    transport with the original as its cause, so that upstream_errors() can say where it
    happened: the operator reading "broke the connection" needs the host, not only the channel."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


@contextlib.contextmanager
def _naming(url: str) -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
        parts = urlsplit(url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        raise _Failed(f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}") from exc


@contextlib.contextmanager
def upstream_errors(channel: str, secret: str | None = None) -> Iterator[None]:
    """Turn client-library and socket errors into our classes, most specific first: a failure
    to connect proves nothing was accepted (so another channel may be tried), while a broken
    or silent connection after sending is ambiguous (the vendor may still work and bill).
    Every message leaves without the channel's key (`secret`) or anything shaped like a key:
    vendors echo keys in their errors (OpenAI's 401 does), and messages reach clients and logs."""
    try:
        yield
    except UpstreamError as exc:
        raise _redacted(exc, secret)
    except _Failed as failed:
        assert failed.__cause__ is not None
        translated = _translated(failed.__cause__, channel, failed.address)
        raise (_redacted(translated, secret) if translated else failed.__cause__) from None
    except (aiohttp.ClientError, OSError) as exc:
        translated = _translated(exc, channel, None)
        raise (_redacted(translated, secret) if translated else exc) from None


# Credentials as vendors write them: OpenAI-style keys (whole, starred, or shortened with an
# ellipsis: "sk-abc...xyz"), Google keys, bearer tokens, key parameters.
# Case-insensitive throughout: a vendor may echo a key upper-cased ("Invalid key SK-ABCD...").
_KEYISH = re.compile(r"\bsk-[A-Za-z0-9_\-]*(?:\.{3}|\u2026)[A-Za-z0-9_\-]*|\bsk-[A-Za-z0-9_\-*]{6,}"
                     r"|\bAIza[0-9A-Za-z_\-*]{10,}|bearer\s+[A-Za-z0-9._\-~+/=*]{8,}"
                     r"|(?:api[_-]?key|key|token|secret)=[A-Za-z0-9._\-*]{8,}", re.IGNORECASE)
# A key shown masked: the visible head and tail around a run of asterisks, dots or an ellipsis
# ("sk-ab****wxyz", "sk-abc...xyz", "****wxyz").
_SHOWN = r"[A-Za-z0-9_\-/+]*"
_MASKED = re.compile(rf"({_SHOWN})(?:\*{{2,}}|\.{{3,}}|\u2026+|\u2022{{2,}})({_SHOWN})")
REDACTED = "[redacted]"


def redact(text: str, secret: str | None = None) -> str:
    """`text` without `secret`, its masked forms (what a vendor shows of it: a head and a tail
    of it around asterisks or an ellipsis) or anything key-shaped, in any letter case."""
    if secret and len(secret) >= 8:
        text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
        folded = secret.casefold()

        def masked(m: re.Match) -> str:
            head, tail = m.group(1).casefold(), m.group(2).casefold()
            return REDACTED if (head or tail) and folded.startswith(head) and folded.endswith(tail) else m.group(0)

        text = _MASKED.sub(masked, text)
    return _KEYISH.sub(REDACTED, text)


def _foreign_image_host(host: str) -> UpstreamBadResponse:
    return UpstreamBadResponse(
        f"The upstream's image URL is on {host}, which is neither the channel's own origin nor a delivery "
        "host of its vendor; the operator may add it to upstream_image_hosts.", code="upstream_url_refused")


def _redacted(exc: UpstreamError, secret: str | None) -> UpstreamError:
    clean = redact(exc.message, secret)
    if clean != exc.message:
        exc.message = clean
        exc.args = (clean,)
    if exc.field:  # a vendor's "param" is relayed too
        exc.field = redact(exc.field, secret)
    return exc


def _translated(exc: BaseException, channel: str, address: str | None) -> UpstreamError | None:
    where = f"channel {channel!r}" + (f" at {address}" if address else "")
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout(f"{where} did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) or exc.os_error.__class__.__name__
        return UpstreamUnavailable(f"cannot connect to channel {channel!r} at {exc.host}:{exc.port}: {reason}")
    if isinstance(exc, ConnectionRefusedError):
        return UpstreamUnavailable(f"cannot connect to {where}: {exc.__class__.__name__}")
    # Socket errors carry an errno; Pillow's (a truncated image is an OSError) do not, and
    # they are no connection failure: let them surface as what they are.
    if isinstance(exc, OSError) and exc.errno is None and not isinstance(exc, (aiohttp.ClientError, ConnectionError)):
        return None
    detail = f" ({exc})" if str(exc) and str(exc) != exc.__class__.__name__ else ""
    return UpstreamBadResponse(f"{where} broke the connection: {exc.__class__.__name__}{detail}")


def too_large(limit: int, what: str = "answer") -> UpstreamBadResponse:
    return UpstreamBadResponse(f"The upstream's {what} is larger than {_size(limit)} (upstream_max_bytes).",
                               code="upstream_too_large")


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n} bytes"


def pool_size(wanted: int) -> int:
    """At most `wanted` upstream connections, and at most half the open files this process may
    have less a reserve: each request in flight also holds its client's socket, so a pool larger
    than that would fail accepts (EMFILE) instead of queueing requests for a free connection."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, (soft - 256) // 2))


class HttpTransport:
    def __init__(self, connections: int, simulators=None, max_bytes: int = DEFAULT_MAX_BYTES,
                 fetcher: Fetcher | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._connections = connections
        self._simulators = simulators
        """pixelgate.simulators.Simulators: calls to `*.simulated` hosts stay in this process."""
        self.max_bytes = max_bytes
        self._fetcher = fetcher or Fetcher([], max_bytes, 60)
        """Downloads of URLs a vendor names (guarded like a client's URLs)."""

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it must be born inside the running loop
            # An idle connection is dropped after 4 s, before the server drops it: servers close
            # idle keep-alive connections after as little as 5 s (uvicorn's and Node's default),
            # and a request sent on one just as it closes is reset, with the vendor never told.
            connector = aiohttp.TCPConnector(limit=pool_size(self._connections), limit_per_host=0, keepalive_timeout=4,
                                             ttl_dns_cache=300, enable_cleanup_closed=True)
            self._session = outbound_session(connector, auto_decompress=True, skip_auto_headers=("User-Agent",))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._fetcher.close()

    def _request(self, call: UpstreamCall, timeout: float):
        kwargs: dict[str, Any] = {"headers": call.headers,
                                  "timeout": aiohttp.ClientTimeout(total=timeout)}
        if call.content is not None:
            kwargs["data"] = call.content
        elif call.json is not None:
            # orjson's bytes keep the 4 KiB buffer they were written in; copied to their size, a
            # request that waits minutes for its vendor holds 0.1 KiB (4 KiB x 10,000 in flight).
            kwargs["data"] = bytes(memoryview(orjson.dumps(call.json)))
            kwargs["headers"] = {**call.headers, "Content-Type": "application/json"}
        elif call.form is not None:
            form = aiohttp.FormData(default_to_multipart=True)  # vendors want multipart even without files
            for name, value in call.form:
                if isinstance(value, FilePart):
                    form.add_field(name, value.data, filename=value.filename, content_type=value.content_type)
                else:
                    form.add_field(name, value)
            kwargs["data"] = form
        # Bytes given whole were signed (SigV4 covers the path as written: %3A stays %3A), so
        # the URL goes as written too, not requoted.
        url = yarl.URL(call.url, encoded=True) if call.content is not None else call.url
        return self.session.request(call.method, url, **kwargs)

    async def send(self, call: UpstreamCall, timeout: float) -> UpstreamReply:
        if self._simulators is not None and (app := self._simulators.app_for(call.url)) is not None:
            return await (_simulated_listen(app, call) if call.listen else _simulated(app, call, timeout))
        if call.listen is not None:
            return await self._listen(call)
        with _naming(call.url):
            async with self._request(call, timeout) as resp:
                return UpstreamReply(resp.status, resp.headers, await self._read(resp))

    async def _listen(self, call: UpstreamCall) -> UpstreamReply:
        """JSON text messages of a websocket, read until the call's Listen has enough."""
        assert call.listen is not None
        messages: list[Any] = []
        url = call.url.replace("http", "ws", 1)
        with _naming(call.url):
            async with self.session.ws_connect(url, headers=call.headers, max_msg_size=self.max_bytes,
                                               timeout=aiohttp.ClientWSTimeout(ws_close=1)) as ws:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(call.listen.seconds):
                        async for msg in ws:
                            if msg.type is aiohttp.WSMsgType.TEXT and _heard(messages, msg.data, call):
                                break
        return UpstreamReply(200, {}, payload=messages)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        try:
            return await read_capped(resp, self.max_bytes)
        except TooLarge:
            raise too_large(self.max_bytes) from None

    async def download(self, url: str, trusted_origins: frozenset[str] = frozenset(),
                       source: Callable[[str], bool] | None = None) -> bytes:
        """An image a vendor handed us by URL. The URL is the vendor's word, so it is fetched as
        carefully as a client's: public addresses only (a vendor answering
        `http://127.0.0.1:6379/` must not make us read our own network), except on
        `trusted_origins`, from where `source` allows (services.fetch.image_source), at most
        max_bytes."""
        if self._simulators is not None and (app := self._simulators.app_for(url)) is not None:
            if source is not None and not source(url):
                raise _foreign_image_host(urlsplit(url).hostname or url)
            reply = await _simulated(app, UpstreamCall("GET", url), 60)
            if reply.status != 200 or not reply.body:
                raise UpstreamBadResponse(f"The upstream's image URL answered HTTP {reply.status}.")
            return reply.body
        try:
            body = await self._fetcher.download(url, self.max_bytes, trusted_origins, source)
        except FetchError as exc:
            if exc.code == "too_large":
                raise too_large(self.max_bytes, "image") from None
            if exc.code == "host_not_allowed":
                raise _foreign_image_host(exc.detail) from None
            if exc.code in ("url_not_allowed", "invalid_url"):
                raise UpstreamBadResponse("The upstream's image URL points at an address the gateway does not "
                                          "fetch from (not public).", code="upstream_url_refused") from None
            if exc.code == "http_status":
                raise UpstreamBadResponse(f"The upstream's image URL answered {exc.detail}.") from None
            raise UpstreamBadResponse(f"Downloading the upstream's image failed: {exc.detail}.") from None
        if not body:
            raise UpstreamBadResponse("The upstream's image URL answered an empty body.")
        return body

    async def stream(self, call: UpstreamCall, timeout: float) -> tuple[UpstreamReply, AsyncIterator[tuple[str, Any]]]:
        if self._simulators is not None and (app := self._simulators.app_for(call.url)) is not None:
            reply = await _simulated(app, call, timeout)
            if reply.status >= 400 or "text/event-stream" not in reply.headers.get("content-type", ""):
                return reply, _none()
            return UpstreamReply(reply.status, reply.headers), _sse_lines(_once(reply.body), self.max_bytes)
        with _naming(call.url):
            resp = await self._request(call, timeout).__aenter__()
            if resp.status >= 400 or "text/event-stream" not in resp.headers.get("content-type", ""):
                try:
                    return UpstreamReply(resp.status, resp.headers, await self._read(resp)), _none()
                finally:
                    resp.release()
        return UpstreamReply(resp.status, resp.headers), _sse_events(resp, self.max_bytes, call.url)


async def _none() -> AsyncIterator[tuple[str, Any]]:
    return
    yield  # pragma: no cover


async def _simulated(app, call: UpstreamCall, timeout: float) -> UpstreamReply:
    """The call, handed to a simulated vendor's ASGI app in this process (no socket)."""
    import httpx

    kwargs: dict[str, Any] = {"headers": call.headers}
    if call.content is not None:
        kwargs["content"] = call.content
    elif call.json is not None:
        kwargs["content"] = orjson.dumps(call.json)
        kwargs["headers"] = {**call.headers, "Content-Type": "application/json"}
    elif call.form is not None:  # multipart even without files, as vendors want: (None, value) is a field
        kwargs["files"] = [(n, (v.filename, v.data, v.content_type) if isinstance(v, FilePart) else (None, str(v)))
                           for n, v in call.form]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=timeout) as client:
        resp = await client.request(call.method, call.url, **kwargs)
    return UpstreamReply(resp.status_code, resp.headers, resp.content)


def _heard(messages: list[Any], text: str, call: UpstreamCall) -> bool:
    """Keep one websocket message; True once the listener has heard enough."""
    try:
        messages.append(orjson.loads(text))
    except orjson.JSONDecodeError:
        return False
    return call.listen.enough(messages[-1])


async def _simulated_listen(app, call: UpstreamCall) -> UpstreamReply:
    """A websocket to a simulated vendor's ASGI app in this process, driven by hand (httpx's
    ASGI transport has no websockets)."""
    parts = urlsplit(call.url)
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": parts.path,
             "raw_path": parts.path.encode(), "query_string": parts.query.encode(), "root_path": "",
             "headers": [(b"host", parts.netloc.encode()),
                         *((k.lower().encode(), v.encode()) for k, v in call.headers.items())],
             "client": ("127.0.0.1", 0), "server": (parts.hostname, parts.port or 80), "subprotocols": []}
    inbox: asyncio.Queue = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    messages: list[Any] = []
    heard = asyncio.Event()

    async def send(message: dict) -> None:
        if message["type"] == "websocket.close" or (
                message["type"] == "websocket.send" and message.get("text") and _heard(messages, message["text"], call)):
            heard.set()

    session = asyncio.create_task(app(scope, inbox.get, send))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(heard.wait(), call.listen.seconds)
    inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
        await asyncio.wait_for(session, 1)
    return UpstreamReply(200, {}, payload=messages)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _sse_events(resp: aiohttp.ClientResponse, max_bytes: int, url: str) -> AsyncIterator[tuple[str, Any]]:
    try:
        with _naming(url):
            async for item in _sse_lines(resp.content.iter_any(), max_bytes):
                yield item
    finally:
        resp.release()


async def _sse_lines(chunks: AsyncIterator[bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> AsyncIterator[tuple[str, Any]]:
    """Server-sent events as (event, parsed data). Lines are split by hand because a frame that
    carries a whole image in base64 is longer than aiohttp's readline allows. Only each new
    chunk is searched for line ends, and an unfinished line is kept as a list of its pieces: a
    10 MB line arriving in 4 KB chunks is joined once, not copied and re-split 2,500 times."""
    pending: list[bytes] = []
    received = 0
    event, data_lines = "message", []
    async for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise too_large(max_bytes, "stream")
        *lines, rest = chunk.split(b"\n")
        if not lines:
            pending.append(chunk)
            continue
        if pending:
            lines[0] = b"".join(pending) + lines[0]
        pending = [rest] if rest else []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:
                if data_lines:
                    data = b"\n".join(data_lines)
                    if data.strip() != b"[DONE]":
                        try:
                            yield event, orjson.loads(data)
                        except orjson.JSONDecodeError:
                            raise UpstreamBadResponse("upstream sent an event that is not JSON") from None
                event, data_lines = "message", []
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data_lines.append(line[5:].lstrip())

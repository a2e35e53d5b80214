"""Fetching URLs that clients give us (input images, later webhooks), guarded against
server-side request forgery.

Only http and https. The address a host name resolves to must be public: loopback, private,
link-local (cloud metadata lives at 169.254.169.254), multicast, reserved and unspecified
addresses are refused. The check happens in the resolver, so the connection goes to exactly
the address that was checked (no DNS-rebinding window), and redirects are followed by hand so
every hop is checked again. Bytes and time are bounded. Hosts the operator names in
`fetch_allow_hosts` skip the address check.

An image URL a vendor answers is narrower still (`image_source`): only its channel's own origin,
the delivery hosts its provider declares and the operator's `upstream_image_hosts` (a vendor
must not make the gateway read another channel's service, even a public one).
"""

from __future__ import annotations

import asyncio
import binascii
import fnmatch
import ipaddress
import socket
from typing import Any, Callable, Iterable
from urllib.parse import urljoin, urlsplit

import aiohttp
import pybase64
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from pixelgate.domain.images import INLINE_DECODE_BYTES, InputImage, load_image
from pixelgate.errors import InvalidRequest

MAX_REDIRECTS = 5
REPLY_BYTES = 64 * 1024
"""What a webhook receiver's answer may be: only its status counts, the rest is not read."""

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_LOW32 = (ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated), :: and ::1 included
          ipaddress.ip_network("::ffff:0:0:0/96"))  # IPv4-translated (SIIT)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches through: mapped, compatible, translated,
    6to4, Teredo (server and client) and NAT64 forms. A host that answers to `::127.0.0.1` or
    `64:ff9b::7f00:1` sends the packets to 127.0.0.1 (or to whatever the translator reaches)."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in net for net in _NAT64 + _LOW32):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(address: str) -> bool:
    """Globally routable unicast: not loopback, private, link-local, shared, reserved or
    multicast, and for IPv6 not a form that embeds such an IPv4 address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded:
            return all(v4.is_global and not v4.is_multicast for v4 in embedded)
    return ip.is_global and not ip.is_multicast


def origin(url: str) -> str:
    """scheme://host:port, lowercased, with the scheme's default port spelled out."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def image_source(own_origin: str, hosts: Iterable[str]) -> Callable[[str], bool]:
    """Whether a vendor's image URL may be downloaded: on the channel's own origin, or on a host
    matching one of `hosts` (shell patterns, case-insensitive)."""
    patterns = tuple(h.lower() for h in hosts)

    def allowed(url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        return origin(url) == own_origin or any(fnmatch.fnmatchcase(host, p) for p in patterns)

    return allowed


class Refused(Exception):
    """The URL points somewhere we do not fetch from."""


class FetchError(Exception):
    """A fetch that did not give a body; `code` says why (the caller words it for its reader:
    a client's field, or a vendor's answer)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class GuardedResolver(AbstractResolver):
    def __init__(self, allowed_hosts: frozenset[str]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed_hosts

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        results = await self._inner.resolve(host, port, family)
        if host.lower() in self._allowed:
            return results
        public = [r for r in results if is_public(r["host"])]
        if not public:
            raise Refused(f"{host} resolves to a non-public address")
        return public

    async def close(self) -> None:
        await self._inner.close()


READ_BUFFER = 4 * 1024 * 1024
"""How much of an answer aiohttp may hold before it stops reading the socket (its default, 64 KB,
is far below one image: a 1.5 MB answer then stopped and resumed reading a dozen times, and the
benchmark's 1.5 MB answers went through at two thirds of the rate). What we read, we read whole."""


def outbound_session(connector: aiohttp.BaseConnector, **options: Any) -> aiohttp.ClientSession:
    """A pool toward vendors and the hosts they name. No cookie jar: one pool serves every
    channel and client, so a vendor's Set-Cookie would go back with other customers' keys."""
    return aiohttp.ClientSession(connector=connector, read_bufsize=READ_BUFFER,
                                 cookie_jar=aiohttp.DummyCookieJar(), **options)


class Fetcher:
    def __init__(self, allowed_hosts: list[str], max_bytes: int, timeout: float) -> None:
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._trusted_session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._allowed), limit=256)
            self._session = outbound_session(connector)
        return self._session

    @property
    def trusted_session(self) -> aiohttp.ClientSession:
        """For origins the caller vouches for (a channel's own host): no address check."""
        if self._trusted_session is None:
            self._trusted_session = outbound_session(aiohttp.TCPConnector(limit=256))
        return self._trusted_session

    async def close(self) -> None:
        for session in (self._session, self._trusted_session):
            if session is not None:
                await session.close()

    def check_url(self, url: str, field: str) -> None:
        """The URL's form, and its host if that is an address literal; names are checked by the
        resolver at connection time (or by check_destination, ahead of time)."""
        parts = urlsplit(url)
        try:
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 -- raises ValueError on a port out of range
        except ValueError:
            host = ""
        if parts.scheme not in ("http", "https") or not host:
            raise InvalidRequest(f"'{field}' must be an http or https URL.", field=field, code="invalid_url")
        if host in self._allowed:
            return
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not is_public(str(literal)):
            raise InvalidRequest(f"'{field}' points at a non-public address.", field=field, code="url_not_allowed")

    async def check_destination(self, url: str, field: str) -> None:
        """For a URL the gateway will call later (a webhook): its form, and what its host name
        resolves to now, so that a client learns at once that `http://localhost/` will never be
        called rather than after nine failed deliveries. Delivery checks again (DNS may change)."""
        self.check_url(url, field)
        host = (urlsplit(url).hostname or "").lower()
        if host in self._allowed:
            return
        try:
            ipaddress.ip_address(host)
            return  # a literal, checked above
        except ValueError:
            pass
        try:
            async with asyncio.timeout(self._timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise InvalidRequest(f"'{field}' names a host that does not exist: {host}.", field=field,
                                     code="url_unresolvable") from None
            return  # a resolver hiccup is no proof: delivery will try (and check) again
        except (asyncio.TimeoutError, OSError, UnicodeError):
            return
        if not any(is_public(info[4][0]) for info in infos):
            raise InvalidRequest(f"'{field}' points at a non-public address ({host} resolves to "
                                 f"{infos[0][4][0]}).", field=field, code="url_not_allowed")

    async def download(self, url: str, max_bytes: int | None = None,
                       trusted_origins: frozenset[str] = frozenset(),
                       source: Callable[[str], bool] | None = None) -> bytes:
        """The body at `url`, following at most MAX_REDIRECTS redirects, each one checked, at
        most `max_bytes` of it; FetchError otherwise. URLs on `trusted_origins` skip the address
        check (their hops elsewhere do not); with `source`, every hop must also pass it."""
        limit = max_bytes or self._max_bytes
        try:
            async with asyncio.timeout(self._timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    if source is not None and not source(url):
                        raise FetchError("host_not_allowed", urlsplit(url).hostname or url)
                    if origin(url) in trusted_origins:
                        session = self.trusted_session
                    else:
                        try:
                            self.check_url(url, "url")
                        except InvalidRequest as exc:
                            raise FetchError(exc.code, exc.message) from None
                        session = self.session
                    async with session.get(url, allow_redirects=False) as resp:
                        if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                            url = urljoin(url, resp.headers["location"])
                            continue
                        if resp.status != 200:
                            raise FetchError("http_status", f"HTTP {resp.status}")
                        return await read_capped(resp, limit)
                raise FetchError("too_many_redirects", "too many redirects")
        except Refused:
            raise FetchError("url_not_allowed", "non-public address") from None
        except TooLarge:
            raise FetchError("too_large", f"larger than {limit} bytes") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise FetchError("url_fetch_failed", exc.__class__.__name__) from None

    async def get(self, url: str, field: str) -> bytes:
        """A client's URL (an input image): the body, or a 400 naming the field."""
        self.check_url(url, field)
        try:
            return await self.download(url)
        except FetchError as exc:
            if exc.code == "too_large":
                raise _too_large(field, self._max_bytes) from None
            if exc.code in ("url_not_allowed", "invalid_url"):
                message = (f"'{field}' points at a non-public address." if exc.code == "url_not_allowed"
                           else f"'{field}' must be an http or https URL.")
                raise InvalidRequest(message, field=field, code=exc.code) from None
            if exc.code == "too_many_redirects":
                raise InvalidRequest(f"Fetching '{field}' took too many redirects.", field=field,
                                     code="url_fetch_failed") from None
            raise InvalidRequest(f"Fetching '{field}' failed: {exc.detail}.", field=field,
                                 code="url_fetch_failed") from None

    async def post(self, url: str, body: bytes, headers: dict[str, str], field: str) -> int:
        """POST to a client's URL (webhooks); redirects are not followed. Returns the status;
        at most REPLY_BYTES of the answer are read (a receiver could answer without end)."""
        self.check_url(url, field)
        try:
            async with asyncio.timeout(self._timeout):
                async with self.session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    await resp.content.read(REPLY_BYTES)
                    return resp.status
        except Refused:
            raise InvalidRequest(f"'{field}' points at a non-public address.", field=field,
                                 code="url_not_allowed") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise InvalidRequest(f"Sending to '{field}' failed: {exc.__class__.__name__}.", field=field,
                                 code="url_fetch_failed") from None

    async def image(self, value: str, field: str) -> InputImage:
        """An image given as a URL, a data URL or raw base64, decoded and checked once."""
        if "://" in value[:16]:  # a URL of some scheme; get() refuses all but http(s)
            return await load_image(await self.get(value, field), field)
        return await load_image(await decode_inline(value, field), field)


class TooLarge(Exception):
    """A body went over its byte cap."""


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response's body, or TooLarge as soon as it passes `limit` bytes (a declared length
    over it is refused before reading anything)."""
    if (resp.content_length or 0) > limit:
        raise TooLarge()
    chunks, size = [], 0
    # iter_any hands over what the socket has given (one chunk, usually, uncopied); iter_chunked(n)
    # joins chunks into n-byte pieces first, a second copy of every image before the join below.
    # (Not iter_chunks: a gateway's event loop was found spinning inside its iterator, frozen.)
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_inline(value: str, field: str) -> bytes:
    """A data URL (data:image/png;base64,...) or bare base64; large ones decoded in a thread."""
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise InvalidRequest(f"'{field}' data URL must be base64-encoded.", field=field)
    try:
        if len(value) <= INLINE_DECODE_BYTES:
            return pybase64.b64decode(value, validate=True)
        return await asyncio.to_thread(pybase64.b64decode, value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{field}' is not a URL, a data URL or base64 image data.", field=field) from None


def _too_large(field: str, limit: int) -> InvalidRequest:
    return InvalidRequest(f"'{field}' is larger than {limit // (1024 * 1024)} MB.", field=field, code="image_too_large")

"""Fetching URLs that clients give us (input images, later webhooks), guarded against
server-side request forgery.

Only http and https. The address a host name resolves to must be public: loopback, private,
link-local (cloud metadata lives at 169.254.169.254), multicast, reserved and unspecified
addresses are refused. The check happens in the resolver, so the connection goes to exactly
the address that was checked (no DNS-rebinding window), and redirects are followed by hand so
every hop is checked again. Bytes and time are bounded. Hosts the operator names in
`fetch_allow_hosts` skip the address check.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from pixelgate.domain.images import InputImage, read_image
from pixelgate.errors import InvalidRequest

MAX_REDIRECTS = 5


def is_public(address: str) -> bool:
    """Globally routable unicast: not loopback, private, link-local, shared, reserved or multicast."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class Refused(Exception):
    """The URL points somewhere we do not fetch from."""


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


class Fetcher:
    def __init__(self, allowed_hosts: list[str], max_bytes: int, timeout: float) -> None:
        self._allowed = frozenset(h.lower() for h in allowed_hosts)
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._allowed), limit=256)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def check_url(self, url: str, field: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidRequest(f"'{field}' must be an http or https URL.", field=field, code="invalid_url")
        host = parts.hostname.lower()
        if host in self._allowed:
            return
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not is_public(str(literal)):
            raise InvalidRequest(f"'{field}' points at a non-public address.", field=field, code="url_not_allowed")

    async def get(self, url: str, field: str) -> bytes:
        """The body at `url`, following at most MAX_REDIRECTS redirects, each one checked."""
        try:
            async with asyncio.timeout(self._timeout):
                for _ in range(MAX_REDIRECTS + 1):
                    self.check_url(url, field)
                    async with self.session.get(url, allow_redirects=False) as resp:
                        if resp.status in (301, 302, 303, 307, 308) and "location" in resp.headers:
                            url = urljoin(url, resp.headers["location"])
                            continue
                        if resp.status != 200:
                            raise InvalidRequest(f"Fetching '{field}' failed: HTTP {resp.status}.", field=field,
                                                 code="url_fetch_failed")
                        if (resp.content_length or 0) > self._max_bytes:
                            raise _too_large(field, self._max_bytes)
                        body = bytearray()
                        async for chunk in resp.content.iter_chunked(65536):
                            body += chunk
                            if len(body) > self._max_bytes:
                                raise _too_large(field, self._max_bytes)
                        return bytes(body)
                raise InvalidRequest(f"Fetching '{field}' took too many redirects.", field=field,
                                     code="url_fetch_failed")
        except Refused:
            raise InvalidRequest(f"'{field}' points at a non-public address.", field=field,
                                 code="url_not_allowed") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise InvalidRequest(f"Fetching '{field}' failed: {exc.__class__.__name__}.", field=field,
                                 code="url_fetch_failed") from None

    async def post(self, url: str, body: bytes, headers: dict[str, str], field: str) -> int:
        """POST to a client's URL (webhooks); redirects are not followed. Returns the status."""
        self.check_url(url, field)
        try:
            async with asyncio.timeout(self._timeout):
                async with self.session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    await resp.read()
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
            return read_image(await self.get(value, field), field)
        return read_image(decode_inline(value, field), field)


def decode_inline(value: str, field: str) -> bytes:
    """A data URL (data:image/png;base64,...) or bare base64."""
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise InvalidRequest(f"'{field}' data URL must be base64-encoded.", field=field)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{field}' is not a URL, a data URL or base64 image data.", field=field) from None


def _too_large(field: str, limit: int) -> InvalidRequest:
    return InvalidRequest(f"'{field}' is larger than {limit // (1024 * 1024)} MB.", field=field, code="image_too_large")

"""API keys: creation, hashing and the one authenticate() every surface calls.

Keys are shown once and stored only as SHA-256 (they are 256-bit random strings, so a slow
password hash would add latency to every request and no safety). A verified key is trusted
for `cache_seconds` in this process, which bounds how long a revoked key keeps working.

Guessing is throttled per client address (`throttle`, surfaces._limits.AuthFailures): only a
key that fails to verify counts, and past the limit it is answered 429 instead of 401. A key
that verifies always passes, so a guesser cannot lock out the clients behind its address, and
nothing that needs no key (signed /files links) is ever throttled.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Awaitable, Callable, Mapping, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.db.models import Account, ApiKey, ConsoleSession
from pixelgate.db.session import read_rows
from pixelgate.errors import Forbidden, NotFound, Unauthorized

KEY_PREFIX = "pg-"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    name: str
    is_admin: bool
    allowed_models: frozenset[str] | None
    expires_at: datetime | None
    account_id: int | None = None
    rate_limit_rpm: int | None = None
    max_concurrent: int | None = None
    group: str | None = None
    account_markup: Decimal = Decimal(1)
    """The account's markup (Account.markup); the group's is a setting (group_markups)."""

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def require_model(self, model: str) -> None:
        if not self.may_use(model):
            raise Forbidden(f"This API key is not allowed to use model '{model}'.", field="model")


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def presented_token(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The key, from whichever header the client's SDK uses: `Authorization: Bearer` (OpenAI,
    predictions, Replicate), `Api-Key` (Ideogram), `mj-api-secret` (midjourney-proxy) or
    `x-goog-api-key` (Gemini); else the URL's `?key=`, looked at only when `query` is given (by
    Gemini's routes, as Google's clients send it there): a key in a URL lands in proxies' logs, so
    no other API invites it. The access log (access.py) writes the path without the query."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return (headers.get("api-key") or headers.get("mj-api-secret") or headers.get("x-goog-api-key")
            or (query.get("key") if query is not None else None) or None)


def key_view(row: ApiKey) -> dict:
    """A key as the admin API and CLI show it: never the key or its hash."""
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "is_admin": row.is_admin,
            "enabled": row.enabled, "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "allowed_models": row.allowed_models, "account_id": row.account_id,
            "rate_limit_rpm": row.rate_limit_rpm, "max_concurrent": row.max_concurrent,
            "group": row.group, "created_at": row.created_at.isoformat()}


class Throttle(Protocol):
    """Failed credential checks per client address (surfaces._limits.AuthFailures; console
    sign-in uses the same one): `check` before answering a failure, `failed` to count it."""

    async def check(self, address: str) -> None: ...
    async def failed(self, address: str) -> None: ...


class KeyStore:
    def __init__(self, sessions: async_sessionmaker, cache_seconds: float = 2.0) -> None:
        self._sessions = sessions
        self._cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        """Known keys (least recently used first): room for `max_known`."""
        self._unknown: OrderedDict[str, float] = OrderedDict()
        """Keys that were not found, apart: random guesses never push a real key out."""
        self.max_known, self.max_unknown = 100_000, 10_000
        self._loading: dict[str, asyncio.Future] = {}
        self.announce: Callable[[str], Awaitable[None]] | None = None
        self.throttle: Throttle | None = None

    async def authenticate(self, token: str | None, address: str | None = None) -> Principal:
        """The key's principal, or Unauthorized. A key that does not verify counts against
        `address` (the client's), which past the throttle's limit is answered 429 instead."""
        if not token:
            raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
                               "or 'Api-Key: <key>'.", code="missing_api_key")
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
            self._cache.move_to_end(digest)
        elif self._unknown.get(digest, 0) > now:
            principal = None
        else:
            # Concurrent requests with the same key share one database read.
            loading = self._loading.get(digest)
            if loading is None:
                loading = self._loading[digest] = asyncio.ensure_future(self._load(digest))
                loading.add_done_callback(lambda _: self._loading.pop(digest, None))
            principal = await asyncio.shield(loading)
            if principal is None:
                self._remember(self._unknown, digest, now + self._cache_seconds, self.max_unknown)
            else:
                self._unknown.pop(digest, None)
                self._remember(self._cache, digest, (now + self._cache_seconds, principal), self.max_known)
        if principal is None:
            if address is not None and self.throttle is not None:
                await self.throttle.check(address)
                await self.throttle.failed(address)
            raise Unauthorized(f"Incorrect API key provided: {token[:6]}****. The key is unknown or disabled.")
        if principal.expires_at is not None and principal.expires_at <= datetime.now(timezone.utc):
            raise Unauthorized("This API key has expired.", code="expired_api_key")
        return principal

    @staticmethod
    def _remember(cache: OrderedDict, digest: str, value, most: int) -> None:
        cache[digest] = value
        cache.move_to_end(digest)
        while len(cache) > most:
            cache.popitem(last=False)  # the least recently used

    async def by_digest(self, digest: str) -> Principal | None:
        """The key whose SHA-256 this is, if it is enabled and unexpired (a console session keeps
        the digest, never the key)."""
        principal = await self._load(digest)
        if principal is None or (principal.expires_at is not None
                                 and principal.expires_at <= datetime.now(timezone.utc)):
            return None
        return principal

    async def _load(self, digest: str) -> Principal | None:
        found = next(iter(await read_rows(self._sessions, select(ApiKey, Account.markup).outerjoin(
            Account, Account.id == ApiKey.account_id).where(ApiKey.key_hash == digest))), None)
        row, markup = found if found is not None else (None, None)
        if row is None or not row.enabled:
            return None
        expires = row.expires_at
        if expires is not None and expires.tzinfo is None:  # SQLite drops the zone
            expires = expires.replace(tzinfo=timezone.utc)
        models = frozenset(row.allowed_models) if row.allowed_models is not None else None
        return Principal(row.id, row.name, row.is_admin, models, expires, row.account_id, row.rate_limit_rpm,
                         row.max_concurrent, row.group, Decimal(markup) if markup is not None else Decimal(1))

    async def changed(self) -> None:
        """Forget here at once; `announce` (services.invalidation) tells the other processes."""
        self.forget()
        if self.announce is not None:
            await self.announce("keys")

    def forget(self) -> None:
        self._cache.clear()
        self._unknown.clear()

    async def create(self, name: str, *, is_admin: bool = False, expires_at: datetime | None = None,
                     allowed_models: list[str] | None = None, token: str | None = None,
                     account_id: int | None = None, rate_limit_rpm: int | None = None,
                     max_concurrent: int | None = None, group: str | None = None) -> tuple[ApiKey, str]:
        token = token or new_key()
        row = ApiKey(name=name, key_hash=hash_key(token), prefix=token[:8], is_admin=is_admin,
                     enabled=True, expires_at=expires_at, allowed_models=allowed_models,
                     webhook_secret="whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
                     account_id=account_id, rate_limit_rpm=rate_limit_rpm, max_concurrent=max_concurrent,
                     group=group)
        async with self._sessions() as session, session.begin():
            session.add(row)
        await self.changed()  # a process may have cached this key as unknown
        return row, token

    async def list(self) -> list[ApiKey]:
        async with self._sessions() as session:
            return list((await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars())

    async def get(self, key_id: int) -> ApiKey:
        async with self._sessions() as session:
            row = await session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"No API key with id {key_id}.", field="id")
        return row

    async def update(self, key_id: int, **fields) -> ApiKey:
        async with self._sessions() as session, session.begin():
            result = await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**fields))
            if result.rowcount == 0:
                raise NotFound(f"No API key with id {key_id}.", field="id")
            if fields.get("enabled") is False:  # re-enabling the key must not revive its console sessions
                await session.execute(update(ConsoleSession).where(
                    ConsoleSession.key_id == key_id, ConsoleSession.revoked_at.is_(None)).values(
                    revoked_at=datetime.now(timezone.utc)))
        await self.changed()
        return await self.get(key_id)

    async def delete(self, key_id: int) -> None:
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(ApiKey).where(ApiKey.id == key_id))
            await session.execute(delete(ConsoleSession).where(ConsoleSession.key_id == key_id))
        if result.rowcount == 0:
            raise NotFound(f"No API key with id {key_id}.", field="id")
        await self.changed()

    async def ensure_admin(self, admin_key: str | None) -> str | None:
        """Make sure an admin key exists. Returns a newly generated key (to print once), or
        None when PIXELGATE_ADMIN_KEY was given or an admin key already exists."""
        async with self._sessions() as session:
            if admin_key:
                found = (await session.execute(
                    select(ApiKey.id).where(ApiKey.key_hash == hash_key(admin_key)))).first()
                if found is None:
                    await self.create("admin (PIXELGATE_ADMIN_KEY)", is_admin=True, token=admin_key)
                return None
            found = (await session.execute(select(ApiKey.id).where(ApiKey.is_admin.is_(True)))).first()
        if found is not None:
            return None
        _, token = await self.create("admin", is_admin=True)
        return token

"""Console sessions and CSRF tokens.

A session is a row (db.models.ConsoleSession) shared by every instance: the cookie holds a
random id, signed, and the row keeps only its SHA-256, with the key it belongs to. Signing out
revokes the row, and disabling the key revokes every row of the key (services.auth), so an old
cookie never works again; a session also ends MAX_AGE after sign-in. CSRF tokens are an HMAC of
the session's id."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select, update

from pixelgate.db.models import ApiKey, ConsoleSession
from pixelgate.services.auth import Principal
from pixelgate.services.shared import Services
from pixelgate.services.storage import UrlSigner

COOKIE = "pg_console"
LOGIN_COOKIE = "pg_console_login"
MAX_AGE = 12 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    """The cookie's random id (the CSRF tokens bind to it)."""
    principal: Principal


def _serializer(signer: UrlSigner) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(signer.derive("console-session"), salt="session")


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def open_session(services: Services, principal: Principal) -> str:
    """A new session of this key; returns the cookie's value. Sessions past their age (or
    revoked that long ago) are swept here, so the table holds about a day of sign-ins."""
    session_id = secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)
    async with services.sessions() as db, db.begin():
        await db.execute(delete(ConsoleSession).where(ConsoleSession.created_at < now - timedelta(seconds=MAX_AGE)))
        db.add(ConsoleSession(id=_digest(session_id), key_id=principal.key_id, created_at=now))
    return _serializer(services.signer).dumps({"s": session_id})


async def current(request: Request, services: Services) -> Session | None:
    """The request's live session (read once per request): its row unrevoked and younger than
    MAX_AGE, its key enabled and unexpired."""
    found = getattr(request.state, "console_session", False)
    if found is False:
        request.state.console_session = found = await _load(request, services)
    return found


async def _load(request: Request, services: Services) -> Session | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        session_id = _serializer(services.signer).loads(raw, max_age=MAX_AGE)["s"]
    except (BadSignature, KeyError, TypeError):
        return None
    since = datetime.now(timezone.utc) - timedelta(seconds=MAX_AGE)
    async with services.sessions() as db:
        digest = (await db.execute(select(ApiKey.key_hash).join(ConsoleSession, ConsoleSession.key_id == ApiKey.id)
                                   .where(ConsoleSession.id == _digest(str(session_id)),
                                          ConsoleSession.revoked_at.is_(None),
                                          ConsoleSession.created_at >= since))).scalar()
    principal = await services.keys.by_digest(digest) if digest else None
    return Session(str(session_id), principal) if principal is not None else None


async def principal_of(request: Request, services: Services) -> Principal | None:
    session = await current(request, services)
    return session.principal if session else None


async def close(request: Request, services: Services) -> None:
    """Sign-out: the session's row is revoked, on every instance at once."""
    session = await current(request, services)
    if session is None:
        return
    async with services.sessions() as db, db.begin():
        await db.execute(update(ConsoleSession).where(ConsoleSession.id == _digest(session.id),
                                                      ConsoleSession.revoked_at.is_(None))
                         .values(revoked_at=datetime.now(timezone.utc)))
    request.state.console_session = None


def csrf_token(signer: UrlSigner, session_id: str) -> str:
    secret = signer.derive("console-csrf")
    return hmac.new(secret, session_id.encode(), hashlib.sha256).hexdigest()


def csrf_valid(signer: UrlSigner, session_id: str, given: str | None) -> bool:
    return bool(given) and same(csrf_token(signer, session_id), given)


def same(expected: str, given: str) -> bool:
    """Constant-time equality of two strings, whatever characters a forged form sends."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))

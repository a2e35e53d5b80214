"""Console sessions and CSRF tokens: signed, stateless, the same on every instance."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from pixelgate.services.auth import Principal, hash_key

COOKIE = "pg_console"
LOGIN_COOKIE = "pg_console_login"
MAX_AGE = 12 * 3600


def _serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(request.app.state.services.signer.derive("console-session"), salt="session")


def new_session(request: Request, token: str) -> str:
    """The cookie value for a session of this key: its digest and a nonce the CSRF token binds to."""
    return _serializer(request).dumps({"d": hash_key(token), "n": secrets.token_hex(16)})


def read_session(request: Request) -> dict | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        return _serializer(request).loads(raw, max_age=MAX_AGE)
    except BadSignature:
        return None


async def principal_of(request: Request) -> Principal | None:
    session = read_session(request)
    if session is None:
        return None
    return await request.app.state.services.keys.by_digest(session["d"])


def csrf_token(request: Request, nonce: str) -> str:
    secret = request.app.state.services.signer.derive("console-csrf")
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()


def csrf_valid(request: Request, nonce: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(request, nonce), given)

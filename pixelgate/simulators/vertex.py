"""Strict loopback emulator of Vertex AI's Google publisher image models, and of the OAuth token
endpoint a service account's key is exchanged at.

  POST /token   grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer, assertion=<RS256 JWT>
                -> {"access_token", "expires_in", "token_type": "Bearer"}
  POST /{v1|v1beta1}/projects/{project}/locations/{location}/publishers/google/models/{model}:{predict|generateContent}

The token endpoint checks the assertion as Google's does: signed (RS256) by the service account's
key, `iss` its client_email, `aud` Google's token URI (or this one), a `scope`, issued
now and valid at most an hour; else 400 {"error": "invalid_grant", "error_description"}. The model
endpoints take only a Bearer token it issued and that has not expired (401 UNAUTHENTICATED),
for the state's project and location (403 PERMISSION_DENIED); the bodies and answers are the
Gemini API emulator's (simulators/google.py), with Vertex's Imagen parameters (seed with
addWatermark false, negativePrompt, ...) accepted.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

import orjson
import pybase64
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.simulators import google as g

__all__ = ["VertexEmulatorState", "create_app", "service_account"]

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
EMAIL = "pixelgate-emulator@emulator-project.iam.gserviceaccount.com"


def _prime(rng: random.Random, bits: int) -> int:
    while True:
        n = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)) and _miller_rabin(n, rng):
            return n


def _miller_rabin(n: int, rng: random.Random, rounds: int = 24) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@lru_cache(maxsize=1)
def _private_key() -> rsa.RSAPrivateKey:
    """The test service account's key: the same in every process and run (the simulated channel's
    key, written to the database, must not change at each start), made from a fixed seed rather
    than stored in the source. It guards nothing but the emulator."""
    rng, e = random.Random("pixelgate vertex emulator"), 65537
    while True:
        p, q = _prime(rng, 1024), _prime(rng, 1024)
        phi = (p - 1) * (q - 1)
        if p != q and math.gcd(e, phi) == 1:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                    rsa.RSAPublicNumbers(e, p * q))
    return numbers.private_key()


def service_account(token_uri: str, project: str = "emulator-project") -> dict[str, Any]:
    """The test service account's JSON key, as the Cloud console downloads it."""
    pem = _private_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": project, "private_key_id": "0123456789abcdef",
            "private_key": pem, "client_email": EMAIL, "client_id": "100000000000000000001",
            "token_uri": token_uri}


@dataclass
class VertexEmulatorState(g.GoogleEmulatorState):
    project: str = "emulator-project"
    location: str = "global"
    token_ttl: int = 3599
    client_email: str = EMAIL
    tokens: dict[str, float] = field(default_factory=dict)
    """Issued access token -> its expiry (time.time())."""
    exchanges: int = 0


def _grant_error(description: str) -> Response:
    return Response(orjson.dumps({"error": "invalid_grant", "error_description": description}), 400,
                    media_type="application/json")


def _b64url(part: str) -> bytes:
    return pybase64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def _token(request: Request) -> Response:
    state: VertexEmulatorState = request.app.state.emulator
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
    if form.get("grant_type") != JWT_BEARER:
        return Response(orjson.dumps({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
                        400, media_type="application/json")
    try:
        head, payload, signature = form.get("assertion", "").split(".")
        header, claims = orjson.loads(_b64url(head)), orjson.loads(_b64url(payload))
        _private_key().public_key().verify(_b64url(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(),
                                           hashes.SHA256())
    except InvalidSignature:
        return _grant_error("Invalid JWT Signature.")
    except (ValueError, orjson.JSONDecodeError):
        return _grant_error("Invalid JWT: malformed.")
    now = time.time()
    own_uri = str(request.url.replace(query=""))
    if header.get("alg") != "RS256":
        return _grant_error("Invalid JWT: only RS256 is accepted.")
    if claims.get("iss") != state.client_email:
        return _grant_error("Invalid JWT: the issuer is not a known service account.")
    if claims.get("aud") not in (GOOGLE_TOKEN_URI, own_uri):  # google-auth always names Google's
        return _grant_error(f"Invalid JWT: aud must be {GOOGLE_TOKEN_URI}.")
    if not claims.get("scope"):
        return _grant_error("Invalid JWT: no scope.")
    iat, exp = claims.get("iat", 0), claims.get("exp", 0)
    if not (now - 300 <= iat <= now + 300 and iat < exp <= iat + 3600):
        return _grant_error("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                            "timeframe. Check your iat and exp values in the JWT claim.")
    token = "ya29.emulator-" + secrets.token_urlsafe(24)
    state.tokens[token] = now + state.token_ttl
    state.exchanges += 1
    return Response(orjson.dumps({"access_token": token, "expires_in": state.token_ttl, "token_type": "Bearer"}),
                    media_type="application/json")


def _auth(request: Request, state: VertexEmulatorState) -> g.ApiError | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expiry = state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    if expiry is None or expiry < time.time():
        return g.ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                               "login cookie or other valid authentication credential. See "
                               "https://developers.google.com/identity/sign-in/web/devconsole-project.",
                          "UNAUTHENTICATED")
    project, location = request.path_params["project"], request.path_params["location"]
    if (project, location) != (state.project, state.location):
        model = request.path_params["target"].split(":")[0]
        return g.ApiError(403, f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform."
                               f"googleapis.com/projects/{project}/locations/{location}/publishers/google/models/"
                               f"{model}' (or it may not exist).", "PERMISSION_DENIED")
    return None


async def _model(request: Request) -> Response:
    return await g.serve_model(request, request.path_params["target"], _auth, vertex=True)


def create_app(state: VertexEmulatorState | None = None) -> Starlette:
    model_path = "/projects/{project}/locations/{location}/publishers/google/models/{target}"
    app = Starlette(routes=[
        Route("/token", _token, methods=["POST"]),
        Route("/v1" + model_path, _model, methods=["POST"]),
        Route("/v1beta1" + model_path, _model, methods=["POST"]),
        Route("/{path:path}", g._not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ])
    app.state.emulator = state if state is not None else VertexEmulatorState()
    return app

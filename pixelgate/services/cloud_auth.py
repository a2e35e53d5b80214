"""Cloud credentials the engine applies to a provider's built call (Provider.credentials): the I/O
a pure provider cannot do.

- "google-service-account" (vertex): the channel's service account (its JSON as the api_key, or
  the file at options.credentials_file) is exchanged for an OAuth access token at its `token_uri`
  by google-auth, whose blocking refresh runs in a thread and sends its one request back through
  the gateway's own HTTP transport (so simulated hosts and upstream_max_bytes hold for it too).
  The token is cached per channel and refreshed before it expires (google-auth's threshold).
- "aws-sigv4" (bedrock): the call is signed with botocore's SigV4Auth for the channel's region,
  with the channel's key (`ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]`) or, without one, the standard
  AWS credential chain (environment, profile files, instance/container roles).

Nothing of a credential reaches a message: a failure names the channel and what went wrong.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import orjson

from pixelgate.errors import UpstreamUnavailable
from pixelgate.providers.base import Channel, Provider, UpstreamCall, UpstreamReply

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# botocore logs each canonical request at DEBUG, session token included: never ours.
logging.getLogger("botocore.auth").setLevel(logging.INFO)
AUTH_FAILED = "upstream_auth_failed"


def _refused(channel: Channel, why: str) -> UpstreamUnavailable:
    # Another channel may serve: nothing was sent to the vendor.
    return UpstreamUnavailable(f"channel {channel.name!r}: {why}", code=AUTH_FAILED)


@dataclass
class _GoogleToken:
    credentials: Any  # google.oauth2.service_account.Credentials
    lock: asyncio.Lock


class _Response:
    """google.auth.transport.Response over our UpstreamReply."""

    def __init__(self, reply: UpstreamReply) -> None:
        self.status, self.headers, self.data = reply.status, dict(reply.headers), reply.body


class _Bridge:
    """google.auth.transport.Request for a worker thread: each request runs on the event loop
    through the gateway's transport."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None, **_: Any) -> _Response:
        call = UpstreamCall(method, url, dict(headers or {}),
                            content=body.encode() if isinstance(body, str) else body)
        limit = timeout or 30
        reply = asyncio.run_coroutine_threadsafe(self._transport.send(call, limit), self._loop).result(limit + 5)
        return _Response(reply)


class CloudAuth:
    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._google: dict[tuple[str, str], _GoogleToken] = {}
        self._aws_chain: Any = None

    async def apply(self, provider: Provider, channel: Channel, call: UpstreamCall) -> UpstreamCall:
        if provider.credentials == "google-service-account":
            token = await self.google_token(channel)
            return dataclasses.replace(call, headers={**call.headers, "Authorization": f"Bearer {token}"})
        if provider.credentials == "aws-sigv4":
            return await self.sigv4(channel, call)
        raise AssertionError(f"unknown credential scheme {provider.credentials!r}")

    # -- Google service accounts --

    async def google_token(self, channel: Channel) -> str:
        file = channel.options.get("credentials_file")
        key = (channel.name, hashlib.sha256(f"{file}\0{channel.api_key or ''}".encode()).hexdigest())
        entry = self._google.get(key)
        if entry is None:
            info = await self._service_account(channel, file)
            from google.oauth2 import service_account

            try:
                creds = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
            except (ValueError, KeyError, TypeError):
                raise _refused(channel, "the service account is incomplete (it needs client_email, private_key "
                                        "and token_uri)") from None
            entry = self._google.setdefault(key, _GoogleToken(creds, asyncio.Lock()))
        async with entry.lock:  # one refresh at a time; the others use its token
            if not entry.credentials.valid:  # absent, or within minutes of expiry
                await self._refresh(channel, entry.credentials)
            return entry.credentials.token

    async def _service_account(self, channel: Channel, file: str | None) -> dict:
        if file:
            try:
                text = await asyncio.to_thread(Path(file).read_text)
            except OSError as exc:
                raise _refused(channel, f"cannot read credentials_file {file}: {exc.strerror}") from None
        else:
            text = channel.api_key or ""
        try:
            info = json.loads(text)
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise _refused(channel, "the credentials are not a service account's JSON key (\"type\": "
                                    "\"service_account\"), as the api_key or credentials_file")
        return info

    async def _refresh(self, channel: Channel, credentials: Any) -> None:
        from google.auth import exceptions

        bridge = _Bridge(self._transport, asyncio.get_running_loop())
        try:
            await asyncio.to_thread(credentials.refresh, bridge)
        except exceptions.RefreshError as exc:
            # google-auth's message is the token endpoint's error and description: no secret
            reason = exc.args[0] if exc.args else exc.__class__.__name__
            raise _refused(channel, f"the token exchange at {urlsplit(credentials._token_uri).netloc} was "
                                    f"refused: {str(reason)[:300]}") from None
        except exceptions.GoogleAuthError as exc:
            raise _refused(channel, f"the token exchange failed: {exc.__class__.__name__}") from None

    # -- AWS SigV4 --

    async def sigv4(self, channel: Channel, call: UpstreamCall) -> UpstreamCall:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = await self._aws_credentials(channel)
        body = call.content if call.content is not None else orjson.dumps(call.json) if call.json is not None else b""
        headers = {**call.headers, **({"Content-Type": "application/json"} if call.json is not None else {})}
        request = AWSRequest(method=call.method, url=call.url, data=body, headers=headers)
        SigV4Auth(credentials, channel.options.get("service", "bedrock"), channel.options["region"]).add_auth(request)
        return dataclasses.replace(call, headers=dict(request.headers.items()), json=None, content=body)

    async def _aws_credentials(self, channel: Channel) -> Any:
        from botocore.credentials import Credentials

        if channel.api_key:
            access, _, rest = channel.api_key.partition(":")
            secret, _, token = rest.partition(":")
            if not access or not secret:
                raise _refused(channel, "the key is not ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]")
            return Credentials(access, secret, token or None)
        if self._aws_chain is None:  # the chain may read files and ask an instance's metadata service
            import botocore.session

            self._aws_chain = await asyncio.to_thread(lambda: botocore.session.get_session().get_credentials())
        if self._aws_chain is None:
            raise _refused(channel, "no key, and the AWS credential chain (environment, ~/.aws, instance role) "
                                    "found no credentials")
        # refreshable (role) credentials renew themselves here, which may ask the metadata service
        return await asyncio.to_thread(self._aws_chain.get_frozen_credentials)

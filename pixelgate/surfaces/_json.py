"""The JSON answer every surface sends: orjson-rendered, money exact, and base64 images that were
lifted from an upstream's answer (see pixelgate/wirejson.py) spliced in without a copy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import Response
from starlette.types import Receive, Scope, Send

from pixelgate import wirejson


def exact(value: Any) -> str:
    if isinstance(value, Decimal):  # money stays exact on the wire: a string, like "0.28"
        return format(value.normalize(), "f")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class _SplicedBody(list):
    """The parts of a body; its len() is the byte count, which is what Content-Length needs."""

    def __len__(self) -> int:
        return sum(part.nbytes if isinstance(part, memoryview) else bytes.__len__(part) for part in self)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> Any:
        parts = wirejson.dumps_parts(content, default=exact)
        return parts[0] if len(parts) == 1 else _SplicedBody(parts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not isinstance(self.body, _SplicedBody):
            return await super().__call__(scope, receive, send)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = list.__len__(self.body) - 1
        for i, part in enumerate(self.body):
            await send({"type": "http.response.body", "body": part, "more_body": i < last})
        if self.background is not None:
            await self.background()

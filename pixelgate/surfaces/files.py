"""GET /files/{id}.{ext}?exp=&sig= : images from the gateway's own storage, by signed link."""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse

from pixelgate.domain.images import MIME_BY_FORMAT
from pixelgate.errors import Forbidden, NotFound
from pixelgate.surfaces._answers import OpenAIError
from pixelgate.surfaces._openapi import BINARY, Errors, ok
from pixelgate.surfaces._route import openai_error, surface_route
from pixelgate.surfaces.deps import SettingsDep, SignerDep, StorageDep

router = APIRouter(route_class=surface_route("files", openai_error, logged=False), tags=["Files"])

_NAME = re.compile(r"^([0-9a-f]{32})\.(png|jpg|webp|gif)$")
_MIME = {"png": MIME_BY_FORMAT["png"], "jpg": MIME_BY_FORMAT["jpeg"], "webp": MIME_BY_FORMAT["webp"],
         "gif": MIME_BY_FORMAT["gif"]}


@router.get("/files/{name}", summary="An image, by signed link", openapi_extra={"security": []},
            responses={**ok(None, description="The image", also=dict.fromkeys(_MIME.values(), BINARY)),
                       307: {"description": "Redirected to the storage's own presigned URL (presigned_urls)"},
                       **Errors(OpenAIError)(400, 403, 404)})
async def get_file(name: str, signer: SignerDep, settings: SettingsDep, storage: StorageDep, exp: int = 0,
                   sig: str = "") -> Response:
    match = _NAME.match(name)
    if not match:
        raise NotFound("No such file.")
    if not signer.verify(name, exp, sig):
        raise Forbidden("This link is invalid or has expired.", code="link_expired")
    if settings.presigned_urls:
        target = await storage.presigned_url(match.group(1), max(1, exp - int(time.time())))
        if target is not None:
            return RedirectResponse(target, status_code=307)
    data = await storage.get(match.group(1))
    if data is None:
        raise NotFound("No such file.")
    return Response(data, media_type=_MIME[match.group(2)],
                    headers={"cache-control": f"private, max-age={max(0, exp - int(time.time()))}",
                             # bytes a vendor made: never sniffed as HTML, never a page that runs
                             "x-content-type-options": "nosniff",
                             "content-security-policy": "default-src 'none'; sandbox"})

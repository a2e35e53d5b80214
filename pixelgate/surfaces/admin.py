"""The admin JSON API under /admin/ (admin keys only): keys, channels and the request log.
Upstream keys are accepted here but never returned."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from pixelgate.config import ChannelConfig
from pixelgate.db.models import RequestLog
from pixelgate.errors import Forbidden, InvalidRequest
from pixelgate.services.auth import key_view, token_from_headers
from pixelgate.services.routing import channel_view
from pixelgate.surfaces._route import surface_route
from pixelgate.surfaces.openai_images import JSONResponse, _json_body, render_error

router = APIRouter(prefix="/admin", route_class=surface_route("admin", render_error, logged=False))


async def _admin(request: Request) -> None:
    principal = await request.app.state.services.keys.authenticate(token_from_headers(request.headers))
    if not principal.is_admin:
        raise Forbidden("This endpoint needs an admin key.", code="admin_required")


def _parse(model: type[BaseModel], data: dict) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise InvalidRequest(f"Invalid value for '{field}': {err['msg']}." if field else err["msg"],
                             field=field) from None


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    expires_at: datetime | None = None
    allowed_models: list[str] | None = None
    is_admin: bool = False


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=128)
    expires_at: datetime | None = None
    allowed_models: list[str] | None = None
    enabled: bool | None = None


@router.get("/keys")
async def list_keys(request: Request) -> Response:
    await _admin(request)
    return JSONResponse({"data": [key_view(k) for k in await request.app.state.services.keys.list()]})


@router.post("/keys")
async def create_key(request: Request) -> Response:
    await _admin(request)
    body = _parse(KeyCreate, await _json_body(request))
    row, token = await request.app.state.services.keys.create(
        body.name, is_admin=body.is_admin, expires_at=body.expires_at, allowed_models=body.allowed_models)
    return JSONResponse({**key_view(row), "key": token}, status_code=201)


@router.get("/keys/{key_id}")
async def get_key(key_id: int, request: Request) -> Response:
    await _admin(request)
    return JSONResponse(key_view(await request.app.state.services.keys.get(key_id)))


@router.patch("/keys/{key_id}")
async def update_key(key_id: int, request: Request) -> Response:
    await _admin(request)
    body = _parse(KeyUpdate, await _json_body(request))
    row = await request.app.state.services.keys.update(key_id, **body.model_dump(exclude_unset=True))
    return JSONResponse(key_view(row))


@router.delete("/keys/{key_id}")
async def delete_key(key_id: int, request: Request) -> Response:
    await _admin(request)
    await request.app.state.services.keys.delete(key_id)
    return Response(status_code=204)


@router.get("/channels")
async def list_channels(request: Request) -> Response:
    await _admin(request)
    return JSONResponse({"data": [channel_view(c) for c in await request.app.state.services.directory.list()]})


@router.post("/channels")
async def create_channel(request: Request) -> Response:
    await _admin(request)
    cfg = _parse(ChannelConfig, await _json_body(request))
    row = await request.app.state.services.directory.create(cfg)
    return JSONResponse(channel_view(row), status_code=201)


@router.get("/channels/{name}")
async def get_channel(name: str, request: Request) -> Response:
    await _admin(request)
    return JSONResponse(channel_view(await request.app.state.services.directory.get(name)))


@router.patch("/channels/{name}")
async def update_channel(name: str, request: Request) -> Response:
    await _admin(request)
    changes = await _json_body(request)
    unknown = set(changes) - set(ChannelConfig.model_fields) - {"name"}
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidRequest(f"Unknown channel field '{field}'.", field=field, code="unknown_parameter")
    try:
        row = await request.app.state.services.directory.update(name, changes)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise InvalidRequest(f"Invalid value for '{field}': {err['msg']}.", field=field) from None
    return JSONResponse(channel_view(row))


@router.delete("/channels/{name}")
async def delete_channel(name: str, request: Request) -> Response:
    await _admin(request)
    await request.app.state.services.directory.delete(name)
    return Response(status_code=204)


@router.get("/requests")
async def list_requests(request: Request, limit: int = 50) -> Response:
    await _admin(request)
    services = request.app.state.services
    await services.records.flush()
    async with services.sessions() as session:
        rows = (await session.execute(
            select(RequestLog).order_by(RequestLog.created_at.desc()).limit(min(max(limit, 1), 1000)))).scalars()
        data = [{c: getattr(r, c) for c in ("id", "key_id", "surface", "operation", "model", "channel",
                                            "status", "error_code", "error", "images_requested",
                                            "images_delivered", "latency_ms", "attempts")}
                | {"created_at": r.created_at.isoformat()} for r in rows]
    return JSONResponse({"data": data})

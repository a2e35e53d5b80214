"""The request as a task keeps it on its row: everything, so that any worker of any instance can
run it again (input images go to image storage and are kept by id), under the context the row
gives back (task_context)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pixelgate.db.models import Task
from pixelgate.domain.images import InputImage
from pixelgate.domain.request import Delivery, ImageRequest, Operation
from pixelgate.errors import GatewayError
from pixelgate.services.context import RequestContext

_IMAGE_FIELDS = ("images", "mask", "style_images")


async def request_snapshot(req: ImageRequest, storage=None) -> dict:
    """The request as plain data; input images are stored (with `storage`) or left out."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(ImageRequest):
        value = getattr(req, f.name)
        if f.name in _IMAGE_FIELDS:
            if storage is not None and value:
                many = value if isinstance(value, list) else [value]
                refs = [{"id": await storage.put(i.data), "format": i.format, "width": i.width, "height": i.height,
                         "has_alpha": i.has_alpha, "filename": i.filename} for i in many]
                data[f.name] = refs if isinstance(value, list) else refs[0]
            continue
        data[f.name] = value.value if hasattr(value, "value") else value
    return data


async def request_from_snapshot(data: dict, storage=None) -> ImageRequest:
    names = {f.name for f in dataclasses.fields(ImageRequest)}
    fields = {k: v for k, v in data.items() if k in names and k not in _IMAGE_FIELDS}
    fields["operation"] = Operation(data["operation"])
    fields["delivery"] = Delivery(data["delivery"]) if data.get("delivery") else None
    fields["extras"] = dict(data.get("extras") or {})
    req = ImageRequest(**fields)
    if storage is not None:
        async def load(ref: dict) -> InputImage:
            stored = await storage.get(ref["id"])
            if stored is None:
                raise GatewayError("An input image of this task is no longer in storage.", code="task_input_lost")
            return InputImage(stored, ref["format"], ref["width"], ref["height"], ref["has_alpha"], ref.get("filename"))

        req.images = [await load(r) for r in data.get("images") or []]
        req.style_images = [await load(r) for r in data.get("style_images") or []]
        req.mask = await load(data["mask"]) if data.get("mask") else None
    return req


def task_context(task: Task) -> RequestContext:
    """The context a worker runs a task's request under, as its submitting request had it: its
    request id (which the task's log lines name), surface, origin (its links' base URL), and the
    channel its jobs ran on, whose hosts alone may serve their images (a synchronous model's task
    has none until it has run: its run picks one)."""
    return RequestContext(request_id=task.request_id, surface=task.surface, base_url=task.origin or "",
                          channel=task.channel)

"""Stability AI's REST API (v2beta). Synchronous, except the creative upscale.

Upstream (no stored copy in ../shared/upstreams/; from Stability's v2beta reference as recorded,
platform.stability.ai/docs/api-reference, and third-party copies of it), base
https://api.stability.ai, header `Authorization: Bearer <key>`, every body multipart/form-data. The
endpoints and the fields each takes are data, in stability_endpoints.py; the one asynchronous one:
  POST /v2beta/stable-image/upscale/creative -> {"id"}, then
  GET  /v2beta/results/{id}                  202 {"id", "status": "in-progress"} | 200 the image
  -> with `Accept: image/*` the image's bytes, headers `finish-reason` (SUCCESS | CONTENT_FILTERED)
     and `seed`; with `Accept: application/json` {"image": <base64>, "finish_reason", "seed"}
  errors {"id", "name", "errors": ["<field>: <message>", ...]}: 400 bad_request, 401, 403
  content_moderation, 413, 422, 429, 500.
Models: the three generate endpoints by model name (stable-image-ultra, stable-image-core, the sd3.5
names); every other endpoint is a model of its own, `stability-<endpoint>` (OPERATION_MODELS), so that
each has its own price and its own fields on every API. An edit of a generating model is image-to-image,
or, with a mask, an inpaint. CONTENT_FILTERED (a blurred image) is a refusal, not an image to deliver.
"""

from __future__ import annotations

from typing import Any

from pixelgate.domain import masks, sizes
from pixelgate.domain.images import EXTENSION, MIME_BY_FORMAT
from pixelgate.domain.request import ImageRequest
from pixelgate.domain.result import Finished, Pending, Submitted, UpstreamImage
from pixelgate.domain.sizes import Size
from pixelgate.errors import (InvalidRequest, UpstreamBadResponse, UpstreamContentFiltered, UpstreamError,
                              UpstreamUnavailable)
from pixelgate.providers.base import (EDIT, GENERATE, Capabilities, Channel, FilePart, Provider, UpstreamCall,
                                      UpstreamReply, error_for_status)
from pixelgate.providers.stability_endpoints import (CORE, ENDPOINTS, GENERATORS, INPAINT, MAX_SEED, RATIOS,
                                                     SD3_MODELS, ULTRA, Endpoint, options_model)

MB = 1024 * 1024
DEFAULT_STRENGTH = 0.5
"""Image-to-image needs a strength; Stability has no default, so an edit without one sends the middle."""
RESULTS_PATH = "/v2beta/results/"


def _fit(size: Size) -> str | None:
    """Any size -> the nearest of Stability's nine aspect ratios (the pixels are Stability's: about
    one megapixel); auto -> none sent (1:1)."""
    if size.is_auto:
        return None
    options = [sizes.parse(r) for r in RATIOS]
    return sizes.nearest(size, options, allowed_text=", ".join(RATIOS) + " or auto").colon()


def _caps(model: str) -> Capabilities:
    endpoint = ENDPOINTS[model]
    generator = model in GENERATORS
    ops = frozenset({GENERATE} if model == CORE else {GENERATE, EDIT} if generator else {EDIT})
    return Capabilities(
        operations=ops, max_prompt=10000,
        prompt_required=ops if endpoint.prompt == "required" else frozenset(),
        max_n=10, n_per_call=1,  # one image a call: the engine fans out n
        fit_size=_fit, sizes_by_operation={EDIT: ("auto",)},  # an edit keeps its input's shape
        output_formats=("png", "webp") if endpoint.formats == ("png", "webp") else ("png", "jpeg", "webp"),
        max_images=1, image_formats=("png", "jpeg", "webp"), image_max_bytes=10 * MB,
        image_needs_alpha_without_mask=endpoint.mask,  # inpaint and erase read the alpha channel then
        asynchronous=endpoint.asynchronous, options=options_model(model, endpoint))


class Stability(Provider):
    name = "stability"
    default_base_url = "https://api.stability.ai"
    models = {m: _caps(m) for m in ENDPOINTS}

    def build(self, req: ImageRequest, model: str, channel: Channel) -> UpstreamCall:
        endpoint = ENDPOINTS.get(model) or ENDPOINTS.get(req.model) or GENERATORS[ULTRA]
        if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
            raise InvalidRequest(f"Invalid value: {req.seed}. 'seed' must be between 0 and {MAX_SEED}.", field="seed")
        if req.mask is not None and endpoint in GENERATORS.values():
            endpoint = INPAINT  # an edit with a mask is Stability's inpaint, whatever generator was named
        fields = _vendor_fields(req, endpoint)
        form: list[tuple[str, str | FilePart]] = []
        if endpoint.prompt != "none" and req.prompt:
            form.append(("prompt", req.prompt))
        if endpoint.path.endswith("/sd3"):
            form += [("model", model if model in SD3_MODELS else req.model),
                     ("mode", "image-to-image" if req.images else "text-to-image")]
        form += [(k, _text(v)) for k, v in fields.items() if v is not None]
        if req.seed is not None and endpoint.seed:
            form.append(("seed", str(req.seed)))
        fmt = req.output_format or "png"
        form.append(("output_format", fmt if fmt in endpoint.formats else "png"))  # the engine converts
        form += _files(req)
        headers = {"Authorization": f"Bearer {channel.api_key or ''}",
                   "Accept": "application/json" if endpoint.asynchronous else "image/*"}
        return UpstreamCall("POST", self.base_url(channel) + endpoint.path, headers, form=form)

    def parse(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Submitted:
        if _is_image(reply):
            return _image(reply)
        body = reply.json(lift=("image",))
        if isinstance(body, dict) and "image" not in body:  # the creative upscale's {"id"}
            if not isinstance(body.get("id"), str) or not body["id"]:
                raise UpstreamBadResponse("Stability's answer has neither an image nor a job 'id'.")
            return Submitted(job_id=body["id"])
        return _image(reply, body)

    def build_poll(self, job: Submitted, channel: Channel) -> UpstreamCall:
        return UpstreamCall("GET", self.base_url(channel) + RESULTS_PATH + job.job_id,
                            {"Authorization": f"Bearer {channel.api_key or ''}", "Accept": "image/*"})

    def parse_poll(self, req: ImageRequest, reply: UpstreamReply) -> Finished | Pending:
        if reply.status == 202:  # {"id", "status": "in-progress"}
            return Pending()
        return _image(reply)

    def parse_error(self, reply: UpstreamReply) -> UpstreamError:
        body = reply.json_or_none()
        name = body.get("name") if isinstance(body, dict) else None
        errors = body.get("errors") if isinstance(body, dict) else None
        messages = [str(e) for e in errors] if isinstance(errors, list) and errors else []
        message = "; ".join(messages) or f"Stability answered HTTP {reply.status}" + (f" ({name})" if name else "")
        if reply.status == 403 and name == "content_moderation":  # not the key: the content
            return UpstreamContentFiltered(f"Stability's content moderation refused the request: {message}")
        if reply.status == 402:
            return UpstreamUnavailable(f"upstream is out of credits: {message}", code="upstream_insufficient_credits")
        field = messages[0].split(":", 1)[0].strip() if messages and ":" in messages[0] else None
        return error_for_status(reply.status, message, field=_client_field(field))


def _vendor_fields(req: ImageRequest, endpoint: Endpoint) -> dict[str, Any]:
    """The request's vendor fields (its extras), refused unless the endpoint takes them, with what
    Stability leaves to us filled in: an image-to-image strength, the aspect ratio nearest `size`."""
    fields = dict(req.extras)
    taken = set(endpoint.fields) | ({"creativity"} if endpoint.creativity else set())
    for name in fields:
        if name not in taken:
            raise InvalidRequest(f"'{name}' is not taken by {endpoint.path} (an edit with a mask inpaints).",
                                 field=name, code="unsupported_parameter")
    for name in endpoint.required:
        if not fields.get(name):
            raise InvalidRequest(f"Missing required parameter: '{name}'.", field=name,
                                 code="missing_required_parameter")
    if req.images:
        if "aspect_ratio" in fields:
            raise InvalidRequest("'aspect_ratio' is not taken with an input image: the output keeps its shape.",
                                 field="aspect_ratio", code="unsupported_parameter")
        if "strength" in taken:
            fields.setdefault("strength", DEFAULT_STRENGTH)
    elif "strength" in fields:
        raise InvalidRequest("'strength' is taken only with an input image (image-to-image).", field="strength",
                             code="unsupported_parameter")
    elif req.size is not None and (ratio := _fit(sizes.parse(req.size))):
        if "aspect_ratio" in fields:
            raise InvalidRequest("Give 'size' or 'aspect_ratio', not both.", field="aspect_ratio")
        fields["aspect_ratio"] = ratio
    return fields


def _client_field(field: str | None) -> str | None:
    """The client's name for a field Stability names in an error."""
    if field is None or not field.replace("_", "").isalpha():
        return None
    return {"aspect_ratio": "size", "mode": "image"}.get(field, field)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else format(value, "g") if isinstance(value, float) else str(value)


def _files(req: ImageRequest) -> list[tuple[str, str | FilePart]]:
    parts: list[tuple[str, str | FilePart]] = [
        ("image", FilePart(img.data, img.filename or f"image.{EXTENSION[img.format]}", img.mime)) for img in req.images]
    if req.mask is not None:  # Stability: white marks what to change
        parts.append(("mask", FilePart(masks.convert(req.mask.data, req.mask_convention, "white"), "mask.png",
                                       MIME_BY_FORMAT["png"])))
    return parts


def _is_image(reply: UpstreamReply) -> bool:
    return reply.headers.get("content-type", "").strip().lower().startswith("image/")


def _image(reply: UpstreamReply, body: Any = None) -> Finished:
    """The image of a 200 answer: bytes with finish-reason and seed headers, or Stability's JSON."""
    if _is_image(reply):
        data, b64 = reply.body, None
        finish, seed = reply.headers.get("finish-reason"), reply.headers.get("seed")
    else:
        body = reply.json(lift=("image",)) if body is None else body
        if not isinstance(body, dict) or not body.get("image"):
            raise UpstreamBadResponse("Stability's answer has no image.")
        data, b64, finish, seed = None, body["image"], body.get("finish_reason"), body.get("seed")
    if finish == "CONTENT_FILTERED":
        raise UpstreamContentFiltered("Stability's content filter withheld the image (finish_reason "
                                      "CONTENT_FILTERED).")
    if finish not in (None, "SUCCESS"):
        raise UpstreamBadResponse(f"Stability finished with an unknown reason {finish!r}.")
    if data is not None and not data:
        raise UpstreamBadResponse("Stability's answer has an empty image.")
    details = {"seed": int(seed)} if str(seed or "").isdigit() else {}
    return Finished([UpstreamImage(b64=b64, data=data, details=details)])


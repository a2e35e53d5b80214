"""Checks an ImageRequest against a model's Capabilities before anything is spent.

Every violation is an InvalidRequest naming the parameter as the internal request names it
(OpenAI's names); surfaces with other vocabularies rename the field when they render.
"""

from __future__ import annotations

from pydantic import ValidationError

from pixelgate.domain import sizes
from pixelgate.domain.capabilities import Capabilities
from pixelgate.domain.request import FOLLOW_UPS, ImageRequest, Operation
from pixelgate.errors import InvalidRequest

def supported(values) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _choice(value, allowed, field: str, model: str) -> None:
    if value is None:
        return
    if allowed is None:
        raise InvalidRequest(f"'{field}' is not supported by model '{model}'.", field=field,
                             code="unsupported_parameter")
    if value not in allowed:
        raise InvalidRequest(f"Invalid value: '{value}'. Supported values are: {supported(allowed)}.",
                             field=field)


def validate(req: ImageRequest, caps: Capabilities, surface: str = "") -> None:
    model, op = req.model, req.operation
    if op not in caps.operations:
        raise InvalidRequest(f"Model '{model}' does not support the {op.value} operation.",
                             field="model", code="unsupported_model")
    _check_prompt(req, caps)
    _check_extras(req, caps)  # first: a vendor option may set n
    if caps.n_option and isinstance(k := req.extras.get(caps.n_option), int):
        if req.n not in (1, k):
            raise InvalidRequest(f"'{caps.n_option}' ({k}) and 'n' ({req.n}) disagree; give one of them.",
                                 field=caps.n_option)
        req.n = k
    max_n = caps.surface_max_n.get(surface, caps.max_n)
    if not 1 <= req.n <= max_n:
        limit = "1" if max_n == 1 else f"between 1 and {max_n}"
        raise InvalidRequest(f"Invalid value: {req.n}. 'n' for model '{model}' must be {limit}.",
                             field="n")
    _check_size(req, caps)
    _choice(req.quality, caps.qualities, "quality", model)
    _choice(req.style, caps.styles, "style", model)
    _choice(req.background, caps.backgrounds, "background", model)
    _choice(req.output_format, caps.output_formats, "output_format", model)
    if req.moderation is not None and op is not Operation.GENERATE:
        raise InvalidRequest("'moderation' is only supported when generating, not for edits.",
                             field="moderation", code="unsupported_parameter")
    _choice(req.moderation, caps.moderation, "moderation", model)
    if req.input_fidelity is not None and op is not Operation.EDIT:
        raise InvalidRequest("'input_fidelity' is only supported for edits.", field="input_fidelity",
                             code="unsupported_parameter")
    _choice(req.input_fidelity, caps.input_fidelity, "input_fidelity", model)
    _check_output(req, caps)
    if (req.stream or req.partial_images is not None) and not caps.stream:
        field = "stream" if req.stream else "partial_images"
        raise InvalidRequest(f"'{field}' is not supported by model '{model}'.", field=field,
                             code="unsupported_parameter")
    if req.partial_images is not None and not 0 <= req.partial_images <= 3:
        raise InvalidRequest(f"Invalid value: {req.partial_images}. 'partial_images' must be between 0 and 3.",
                             field="partial_images")
    _check_images(req, caps)


def _check_prompt(req: ImageRequest, caps: Capabilities) -> None:
    if req.operation in caps.prompt_required and not (req.prompt or "").strip():
        raise InvalidRequest("Missing required parameter: 'prompt'.", field="prompt",
                             code="missing_required_parameter")
    if req.prompt and caps.max_prompt is not None and len(req.prompt) > caps.max_prompt:
        raise InvalidRequest(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{caps.max_prompt}, but got a string with length {len(req.prompt)} instead.",
            field="prompt", code="string_above_max_length")
    if req.prompt and caps.check_prompt is not None:
        caps.check_prompt(req.prompt)


def _check_size(req: ImageRequest, caps: Capabilities) -> None:
    if req.size is None:
        return
    allowed = caps.sizes_by_operation.get(req.operation, caps.sizes)
    if allowed is not None:
        if req.size in allowed:
            return
        wanted = sizes.parse(req.size)
        if wanted.width is not None or not any(a != "auto" for a in allowed):
            _choice(req.size, allowed, "size", req.model)  # exact sizes are the model's own list
        # an aspect ratio or a tier: the nearest size the model makes
        options = [sizes.parse(a) for a in allowed if a != "auto"]
        req.size = sizes.nearest(wanted, options, allowed_text=supported(allowed)).wxh()
        return
    wanted = sizes.parse(req.size)
    if caps.fit_size is not None:
        caps.fit_size(wanted)
        return
    if wanted.is_auto:
        return
    if wanted.width is None or not all(16 <= side <= caps.max_side for side in (wanted.width, wanted.height)):
        raise InvalidRequest(f"Invalid value: '{req.size}'. 'size' must be 'auto' or WIDTHxHEIGHT "
                             f"with each side between 16 and {caps.max_side}.", field="size")


def _check_output(req: ImageRequest, caps: Capabilities) -> None:
    if req.background == "transparent" and req.output_format == "jpeg":
        raise InvalidRequest("Transparent background requires output_format 'png' or 'webp'.",
                             field="background")
    if req.output_compression is None:
        return
    if not caps.output_compression:
        raise InvalidRequest(f"'output_compression' is not supported by model '{req.model}'.",
                             field="output_compression", code="unsupported_parameter")
    if not 0 <= req.output_compression <= 100:
        raise InvalidRequest(f"Invalid value: {req.output_compression}. 'output_compression' must be "
                             "between 0 and 100.", field="output_compression")
    if (req.output_format or "png") == "png":
        raise InvalidRequest("'output_compression' is only supported with output_format 'jpeg' or 'webp'.",
                             field="output_compression")


def _check_images(req: ImageRequest, caps: Capabilities) -> None:
    if req.operation is Operation.GENERATE or req.operation in FOLLOW_UPS:  # no input images
        if req.images or req.mask:
            field = "image" if req.images else "mask"
            raise InvalidRequest(f"'{field}' is not accepted when generating.", field=field,
                                 code="unknown_parameter")
        return
    if not req.images:
        raise InvalidRequest("Missing required parameter: 'image'.", field="image",
                             code="missing_required_parameter")
    if len(req.images) > caps.max_images:
        raise InvalidRequest(f"Model '{req.model}' takes at most {caps.max_images} input image(s); "
                             f"got {len(req.images)}.", field="image")
    for image in req.images:
        if image.format not in caps.image_formats:
            raise InvalidRequest(f"Invalid image format '{image.format}'. Supported formats are: "
                                 f"{supported(caps.image_formats)}.", field="image",
                                 code="invalid_image_format")
        if len(image.data) >= caps.image_max_bytes:
            raise InvalidRequest(f"Image too large: {len(image.data)} bytes; it must be under "
                                 f"{caps.image_max_bytes // (1024 * 1024)} MB.", field="image",
                                 code="image_too_large")
        if caps.square_images and image.width != image.height:
            raise InvalidRequest(f"Image must be square; got {image.width}x{image.height}.",
                                 field="image", code="invalid_image")
    mask, first = req.mask, req.images[0]
    if mask is not None:
        if req.operation is not Operation.EDIT:
            raise InvalidRequest("'mask' is only accepted for edits.", field="mask", code="unknown_parameter")
        if mask.format != "png":
            raise InvalidRequest("The mask must be a PNG image.", field="mask", code="invalid_image_format")
        if len(mask.data) >= 4 * 1024 * 1024:
            raise InvalidRequest("Mask too large: it must be under 4 MB.", field="mask", code="image_too_large")
        if (mask.width, mask.height) != (first.width, first.height):
            raise InvalidRequest(f"Mask size {mask.width}x{mask.height} does not match image size "
                                 f"{first.width}x{first.height}.", field="mask", code="invalid_image")
    elif req.operation is Operation.EDIT and caps.image_needs_alpha_without_mask and not first.has_alpha:
        raise InvalidRequest("Without a mask the image must have transparent areas (an alpha channel) "
                             "that mark where to edit.", field="image", code="invalid_image")


def _check_extras(req: ImageRequest, caps: Capabilities) -> None:
    if not req.extras:
        return
    if caps.options is None:
        field = next(iter(req.extras))
        raise InvalidRequest(f"Unrecognized request argument supplied: {field}", field=field,
                             code="unknown_parameter")
    try:
        req.extras = caps.options.model_validate(req.extras).model_dump(exclude_unset=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "input"
        if err["type"] == "extra_forbidden":
            raise InvalidRequest(f"Unrecognized request argument supplied: {field}", field=field,
                                 code="unknown_parameter") from None
        raise InvalidRequest(f"Invalid value for '{field}': {err['msg']}.", field=field) from None

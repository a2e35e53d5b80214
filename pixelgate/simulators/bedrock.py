"""Strict loopback emulator of the AWS Bedrock runtime's InvokeModel for image models.

  POST /model/{modelId}/invoke
    stability.sd3-5-large-v1:0, stability.stable-image-ultra-v1:1, stability.stable-image-core-v1:1:
      {prompt, negative_prompt, aspect_ratio, seed, output_format, mode, image, strength}
      -> {"images": [b64], "seeds": [int], "finish_reasons": [null | "Filter reason: prompt"]}
    amazon.nova-canvas-v1:0: taskType TEXT_IMAGE, IMAGE_VARIATION, INPAINTING -> {"images": [b64], "error": null}

Every request must carry a valid SigV4 signature (checked with botocore, as AWS computes it) by a
known access key, scoped to the state's region and the `bedrock` service, dated within 5 minutes:
else 403 with UnrecognizedClientException / InvalidSignatureException. Errors are JSON
{"message"} with the type in `x-amzn-ErrorType` (ValidationException 400, AccessDeniedException
403, ResourceNotFoundException 404, ThrottlingException 429, ModelNotReadyException 429,
ServiceUnavailableException 503), as boto3 reads them. A prompt containing the needle is filtered:
Stability's way (HTTP 200, no image, finish_reasons "Filter reason: prompt"), Nova's way (400
ValidationException "blocked by our content filters").

Choices where the reference is silent: unknown body keys are refused ("extraneous key [x] is not
permitted"); Stability models take png/jpeg/webp; Ultra and Core take no input image here.
"""

from __future__ import annotations

import asyncio
import binascii
import hmac
import io
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
import pybase64
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pixelgate.simulators.google import render

__all__ = ["BedrockEmulatorState", "create_app", "MODELS"]

STABILITY = ("stability.sd3-5-large-v1:0", "stability.stable-image-ultra-v1:1", "stability.stable-image-core-v1:1")
NOVA = "amazon.nova-canvas-v1:0"
MODELS = (*STABILITY, NOVA)
RATIOS = {"16:9": (1344, 768), "1:1": (1024, 1024), "21:9": (1536, 640), "2:3": (832, 1216), "3:2": (1216, 832),
          "4:5": (896, 1088), "5:4": (1088, 896), "9:16": (768, 1344), "9:21": (640, 1536)}
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                   r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$")
STATUS = {"ValidationException": 400, "AccessDeniedException": 403, "ResourceNotFoundException": 404,
          "ThrottlingException": 429, "ModelNotReadyException": 429, "ServiceUnavailableException": 503,
          "UnrecognizedClientException": 403, "InvalidSignatureException": 403, "InternalServerException": 500}


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any  # JSON, with base64 images replaced by {"bytes": n}

    @property
    def model(self) -> str:
        return self.path.split("/")[2]


@dataclass
class BedrockEmulatorState:
    region: str = "us-east-1"
    keys: dict[str, str] = field(default_factory=lambda: {"AKIAEMULATOR00000000": "emulator-secret-access-key"})
    """Access key id -> secret access key."""
    refuse_prompts_containing: str = "forbidden"
    delay: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)
    failures: deque = field(default_factory=deque)  # (error type, message)
    calls: int = 0

    def fail_next(self, kind: str, message: str = "", count: int = 1) -> None:
        """Answer the next `count` signed calls with the error `kind` (e.g. ThrottlingException)."""
        self.failures.extend([(kind, message or f"{kind} (emulated)")] * count)


class ApiError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def _bad(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def _error(kind: str, message: str) -> Response:
    return Response(orjson.dumps({"message": message}), STATUS.get(kind, 400), media_type="application/json",
                    headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                             "x-amzn-RequestId": "emulated-request"})


def _verify(request: Request, raw: bytes, state: BedrockEmulatorState) -> None:
    """Recompute the SigV4 signature from what arrived, as AWS does; raise ApiError if it differs."""
    m = _AUTH.match(request.headers.get("authorization", ""))
    if m is None:
        raise ApiError("UnrecognizedClientException", "The security token included in the request is invalid.")
    access, day, region, service, signed, signature = m.groups()
    if access not in state.keys:
        raise ApiError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if region != state.region:
        raise ApiError("InvalidSignatureException", f"Credential should be scoped to a valid region, not '{region}'.")
    if service != "bedrock":
        raise ApiError("InvalidSignatureException", "Credential should be scoped to correct service: 'bedrock'.")
    stamp = request.headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ApiError("InvalidSignatureException", "Missing or malformed X-Amz-Date.") from None
    if abs((datetime.now(timezone.utc) - when).total_seconds()) > 300 or not stamp.startswith(day):
        raise ApiError("InvalidSignatureException", "Signature expired: the request time is too far from now.")
    raw_path = request.scope.get("raw_path", request.url.path.encode()).decode()
    query = request.url.query
    host = request.headers.get("host", "")
    url = f"{request.url.scheme}://{host}{raw_path}" + (f"?{query}" if query else "")
    aws = AWSRequest(method=request.method, url=url, data=raw,
                     headers={h: request.headers.get(h, "") for h in signed.split(";")})
    aws.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(access, state.keys[access], request.headers.get("x-amz-security-token")),
                       service, region)
    expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
    if not hmac.compare_digest(expected, signature):
        raise ApiError("InvalidSignatureException", "The request signature we calculated does not match the "
                                                    "signature you provided. Check your AWS Secret Access Key and "
                                                    "signing method.")


def _keys(body: dict, allowed: set[str], where: str = "") -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise _bad(f"Malformed input request: #{where}: extraneous key [{extra[0]}] is not permitted, please "
                   "reformat your input and try again.")


def _num(body: dict, name: str, low: float, high: float, kind: type = int) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)) \
            or not low <= value <= high:
        raise _bad(f"Malformed input request: #/{name}: {value!r} is not a valid value (expected {low}..{high}).")
    return value


def _image(data: Any, name: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(pybase64.b64decode(data, validate=True)))
        img.load()
        return img
    except (binascii.Error, ValueError, TypeError, OSError):
        raise _bad(f"Malformed input request: #/{name}: the image is not valid base64 of a PNG or JPEG.") from None


def _summary(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: ({"bytes": len(v)} if isinstance(v, str) and len(v) > 500 else _summary(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [{"bytes": len(v)} if isinstance(v, str) and len(v) > 500 else _summary(v) for v in body]
    return body


def _encode(prompt: str, salt: str, size: tuple[int, int], fmt: str = "png") -> str:
    mime = "image/jpeg" if fmt == "jpeg" else "image/png"
    data = render(prompt, salt, *size, mime)
    if fmt == "webp":
        buf = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buf, "WEBP")
        data = buf.getvalue()
    return pybase64.b64encode(data).decode()


def _stability(model: str, body: dict, state: BedrockEmulatorState) -> dict:
    keys = {"prompt", "negative_prompt", "aspect_ratio", "seed", "output_format"}
    if model == STABILITY[0]:
        keys |= {"mode", "image", "strength"}
    _keys(body, keys)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not 1 <= len(prompt) <= 10000:
        raise _bad("Malformed input request: #/prompt: expected a string of 1 to 10000 characters.")
    seed = _num(body, "seed", 0, 4294967294) or 0
    fmt = body.get("output_format", "png")
    if fmt not in ("png", "jpeg", "webp"):
        raise _bad(f"Malformed input request: #/output_format: {fmt} is not a valid enum value")
    mode = body.get("mode", "text-to-image")
    if mode not in ("text-to-image", "image-to-image"):
        raise _bad(f"Malformed input request: #/mode: {mode} is not a valid enum value")
    if mode == "image-to-image":
        if "aspect_ratio" in body:
            raise _bad("aspect_ratio is not supported with image-to-image mode.")
        if "image" not in body or _num(body, "strength", 0, 1, float) is None:
            raise _bad("image-to-image mode requires image and strength.")
        size = _image(body["image"], "image").size
    else:
        if "image" in body or "strength" in body:
            raise _bad("image and strength require mode image-to-image.")
        ratio = body.get("aspect_ratio", "1:1")
        if ratio not in RATIOS:
            raise _bad(f"Malformed input request: #/aspect_ratio: {ratio} is not a valid enum value")
        size = RATIOS[ratio]
    state.calls += 1
    needle = state.refuse_prompts_containing
    if needle and needle.lower() in prompt.lower():
        return {"images": [], "seeds": [seed], "finish_reasons": ["Filter reason: prompt"]}
    return {"images": [_encode(prompt, f"{state.calls}", size, fmt)], "seeds": [seed], "finish_reasons": [None]}


def _nova_config(config: Any) -> dict:
    if not isinstance(config, dict):
        raise _bad("Malformed input request: #/imageGenerationConfig: expected an object.")
    _keys(config, {"numberOfImages", "width", "height", "cfgScale", "seed", "quality"}, "/imageGenerationConfig")
    _num(config, "numberOfImages", 1, 5)
    _num(config, "cfgScale", 1.1, 10, float)
    _num(config, "seed", 0, 2147483646)
    if config.get("quality", "standard") not in ("standard", "premium"):
        raise _bad(f"Malformed input request: #/imageGenerationConfig/quality: {config['quality']} is not a valid "
                   "enum value")
    w, h = _num(config, "width", 320, 4096) or 1024, _num(config, "height", 320, 4096) or 1024
    if w % 16 or h % 16 or max(w, h) > 4 * min(w, h) or w * h > 4_194_304:
        raise _bad(f"The provided image dimensions {w}x{h} are not supported: width and height must be multiples "
                   "of 16, at an aspect ratio of 1:4 to 4:1, with at most 4194304 pixels.")
    return config


def _nova(body: dict, state: BedrockEmulatorState) -> dict:
    _keys(body, {"taskType", "textToImageParams", "imageVariationParams", "inPaintingParams", "imageGenerationConfig"})
    task = body.get("taskType")
    params_key = {"TEXT_IMAGE": "textToImageParams", "IMAGE_VARIATION": "imageVariationParams",
                  "INPAINTING": "inPaintingParams"}.get(task)
    if params_key is None:
        raise _bad(f"Malformed input request: #/taskType: {task} is not a valid enum value")
    params = body.get(params_key)
    if not isinstance(params, dict):
        raise _bad(f"Malformed input request: #: required key [{params_key}] not found")
    config = _nova_config(body.get("imageGenerationConfig", {}))
    text = params.get("text")
    if text is not None and (not isinstance(text, str) or not 1 <= len(text) <= 1024):
        raise _bad(f"Malformed input request: #/{params_key}/text: expected 1 to 1024 characters.")
    size = (config.get("width", 1024), config.get("height", 1024))
    if task == "TEXT_IMAGE":
        _keys(params, {"text", "negativeText", "style"}, "/textToImageParams")
        if text is None:
            raise _bad("Malformed input request: #/textToImageParams: required key [text] not found")
    elif task == "IMAGE_VARIATION":
        _keys(params, {"images", "text", "negativeText", "similarityStrength"}, "/imageVariationParams")
        images = params.get("images")
        if not isinstance(images, list) or not 1 <= len(images) <= 5:
            raise _bad("Malformed input request: #/imageVariationParams/images: expected 1 to 5 images.")
        for i, item in enumerate(images):
            _image(item, f"imageVariationParams/images/{i}")
        _num(params, "similarityStrength", 0.2, 1.0, float)
    else:
        _keys(params, {"image", "text", "negativeText", "maskImage", "maskPrompt"}, "/inPaintingParams")
        if ("maskImage" in params) == ("maskPrompt" in params):
            raise _bad("Exactly one of maskImage or maskPrompt must be given for INPAINTING.")
        size = _image(params.get("image"), "inPaintingParams/image").size
        if "maskImage" in params and _image(params["maskImage"], "inPaintingParams/maskImage").size != size:
            raise _bad("The mask image must have the same dimensions as the input image.")
    needle = state.refuse_prompts_containing
    if needle and text and needle.lower() in text.lower():
        raise _bad("This request has been blocked by our content filters.")
    state.calls += 1
    count = config.get("numberOfImages", 1)
    return {"images": [_encode(text or "variation", f"{state.calls}/{i}", size) for i in range(count)], "error": None}


async def _invoke(request: Request) -> Response:
    state: BedrockEmulatorState = request.app.state.emulator
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    model = request.path_params["model"]
    state.requests.append(RecordedRequest(request.url.path, {k.lower(): v for k, v in request.headers.items()},
                                          _summary(body)))
    try:
        await asyncio.sleep(state.delay)
        _verify(request, raw, state)
        if state.failures:
            raise ApiError(*state.failures.popleft())
        if model not in MODELS:
            raise ApiError("ResourceNotFoundException", "Could not resolve the foundation model from the provided "
                                                        "model identifier.")
        if not isinstance(body, dict):
            raise _bad("Malformed input request, please reformat your input and try again.")
        answer = _nova(body, state) if model == NOVA else _stability(model, body, state)
        return Response(orjson.dumps(answer), media_type="application/json")
    except ApiError as exc:
        return _error(exc.kind, exc.message)


async def _unknown(request: Request) -> Response:
    return _error("UnknownOperationException", "The requested operation is not recognized by the service.")


def create_app(state: BedrockEmulatorState | None = None) -> Starlette:
    app = Starlette(routes=[Route("/model/{model}/invoke", _invoke, methods=["POST"]),
                            Route("/{path:path}", _unknown, methods=["GET", "POST", "PUT", "DELETE"])])
    app.state.emulator = state if state is not None else BedrockEmulatorState()
    return app

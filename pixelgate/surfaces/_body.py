"""A request's body, read the same way on every API, and checked against a pydantic model by one
parser: `parse` turns the first thing pydantic refuses into an InvalidRequest naming the field,
which each surface renders in its own error shape.

The body size is enforced below the routes (surfaces/_limits.py BodyLimit raises while the body
streams in, inside `request.body()` and `request.form()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from pixelgate.errors import GatewayError, InvalidRequest

M = TypeVar("M", bound=BaseModel)

MAX_JSON_DEPTH = 32
"""No request of any surface nests deeper; a 1,000-deep prompt would only reach code that
recurses (repr, validation, orjson's encoder limit of 255) and fail there as a 500."""

_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


def parse(model: type[M], data: Any, prefix: str = "") -> M:
    """`data` as `model`; else InvalidRequest naming the first field refused (`prefix` + its
    path: "input.n", "color_palette.name"). A validator may raise a GatewayError of its own (a
    rule across fields names the field it blames): it passes through as raised."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, prefix) from None


def invalid(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """A pydantic refusal as the API's own: the field, a message naming it, and a code a client
    can branch on (missing_required_parameter, unknown_parameter, invalid_type, invalid_value)."""
    errors = exc.errors()
    # an unknown field first: it is most often the missing one, misspelled
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    path = ".".join(str(p) for p in err.get("loc", ()))
    name = prefix + path if path else prefix.rstrip(".") or None
    kind = err.get("type", "")
    code = _CODES.get(kind) or ("invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value")
    msg = err.get("msg", "invalid")
    if len(msg) > 300:  # pydantic lists every allowed value; an enum of 70 sizes is not a message
        msg = msg[:300] + "..."
    if name is None:
        return InvalidRequest(f"{msg}.", code=code)
    if code == "missing_required_parameter":
        return InvalidRequest(f"Missing required parameter: '{name}'.", field=name, code=code)
    if code == "unknown_parameter":
        return InvalidRequest(f"Unknown parameter: '{name}'.", field=name, code=code)
    what = "type" if code == "invalid_type" else "value"
    return InvalidRequest(f"Invalid {what} for '{name}': {msg[0].lower() + msg[1:]}.", field=name, code=code)


def check_depth(data: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """InvalidRequest if `data` nests containers deeper than `limit`, or holds a NUL character
    (PostgreSQL stores no text with one: the insert would fail after the work was done); the
    field is the path of object keys to the offence (image_request.prompt)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            raise InvalidRequest(f"The request nests deeper than {limit} levels" + (f" in '{path}'." if path else "."),
                                 field=path or None, code="invalid_json")
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, depth, path))
                stack.append((v, depth + 1, f"{path}.{k}" if path else str(k)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, path) for v in value)
        elif isinstance(value, str) and "\x00" in value:
            raise InvalidRequest("Text may not contain NUL (\\u0000) characters" + (f": '{path}'." if path else "."),
                                 field=path or None, code="invalid_value")


def json_value(raw: bytes | str, field: str | None = None) -> Any:
    """Parsed JSON, checked for depth and NUL; a part of a form that holds JSON names its field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        where = f"'{field}' is" if field else "The request body is"
        raise InvalidRequest(f"{where} not valid JSON.", field=field, code="invalid_json") from None
    check_depth(data)
    return data


async def json_body(request: Request) -> dict:
    """The body: a JSON object."""
    data = json_value(await request.body())
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return data


JsonBody = Annotated[dict, Depends(json_body)]


def parsed(model: type[BaseModel], empty: dict | None = None) -> Any:
    """A dependency: the JSON body checked as `model` (`empty`: what an empty body stands for,
    where the API's own servers take one). `body: Annotated[ImagineBody, parsed(ImagineBody)]`."""
    async def read(request: Request):
        if empty is not None and not await request.body():
            return parse(model, empty)
        return parse(model, await json_body(request))
    read.__name__ = f"{model.__name__}_body"
    return Depends(read)


@dataclass
class Form:
    """A form's text fields (each at most once) and its files, in the order sent."""

    fields: dict[str, Any] = field(default_factory=dict)
    files: list[tuple[str, UploadFile]] = field(default_factory=list)

    def grouped(self) -> dict[str, list[UploadFile]]:
        out: dict[str, list[UploadFile]] = {}
        for name, upload in self.files:
            out.setdefault(name, []).append(upload)
        return out


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def form_body(request: Request, file_field: str | None = None) -> Form:
    """The body: multipart/form-data (or url-encoded, which has no files); a body of another
    type is refused naming `file_field`, the part the endpoint's files go in."""
    if media_type(request) not in FORM_TYPES:
        raise InvalidRequest(f"Unsupported content type '{media_type(request) or 'none'}': this endpoint takes "
                             "multipart/form-data.", field=file_field, code="invalid_content_type")
    try:
        posted = await request.form(max_files=40, max_fields=100)
    except GatewayError:  # the body limit, raised while the body streams in (surfaces/_limits.py)
        raise
    except Exception as exc:  # python-multipart reports malformed bodies with assorted types
        raise InvalidRequest(f"Malformed multipart body: {exc}.", code="invalid_multipart") from None
    form = Form()
    for name, value in posted.multi_items():
        if isinstance(value, UploadFile):
            form.files.append((name, value))
        elif name in form.fields:
            raise InvalidRequest(f"Parameter '{name}' was given more than once.", field=name)
        else:
            form.fields[name] = value
    return form

"""JSON on the wire without copying base64 images.

A base64 image is nearly all the bytes of the JSON that carries it (1.5 MB of a 1.5 MB answer).
Parsing it into a Python str and rendering that str again costs ~0.8 ms of CPU and two more
copies of an image the gateway only forwards. So:

- `loads(body, lift=("b64_json",))` parses an upstream answer with the long string values of the
  named keys *lifted*: they stay in the received body and appear in the result as memoryviews
  of it (orjson parses only the rest);
- `dumps_parts(content)` renders JSON as a list of parts in which such memoryviews are spliced,
  as they are, between the bytes orjson renders; a response sends the parts one after another.

Only values that need no JSON escaping are lifted (base64 never does; a value with a backslash
is left to orjson), so what is spliced back is byte for byte what a JSON encoder would write.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Callable

import orjson

LIFT_MIN_BYTES = 16 * 1024
"""Shorter values are not worth the bookkeeping."""

_AFTER_KEY = re.compile(rb'[ \t\r\n]*:[ \t\r\n]*"')
_MARK = "pixelgate-lifted-" + secrets.token_hex(8) + "-"
"""Stands in for a lifted value while orjson works; random, so no real text can collide."""


def loads(body: bytes, lift: tuple[str, ...] = ()) -> Any:
    """orjson.loads, with the long string values of the keys in `lift` left as memoryviews."""
    spans = _lifted_spans(body, lift) if lift and len(body) >= LIFT_MIN_BYTES else []
    if not spans:
        return orjson.loads(body)
    pieces, marks, pos = [], {}, 0
    view = memoryview(body)
    for i, (begin, end) in enumerate(spans):
        mark = f"{_MARK}{i}"
        marks[mark] = view[begin:end]
        pieces += [view[pos:begin], mark.encode()]
        pos = end
    pieces.append(view[pos:])
    return _restore(orjson.loads(b"".join(pieces)), marks)


def _lifted_spans(body: bytes, keys: tuple[str, ...]) -> list[tuple[int, int]]:
    """Where the long values of `keys` lie: between the quotes, as (begin, end) offsets."""
    spans = []
    for key in keys:
        needle = b'"' + key.encode() + b'"'
        at = body.find(needle)
        while at >= 0:
            resume = at + len(needle)
            after = _AFTER_KEY.match(body, resume)
            if after is not None:  # else the key's text appeared as a value, not as a key
                begin = after.end()
                end = body.find(b'"', begin)  # memchr: base64 has no quotes
                if end < 0:
                    break
                if end - begin >= LIFT_MIN_BYTES and body.find(b"\\", begin, end) < 0:
                    spans.append((begin, end))
                resume = end + 1  # the next search starts after the value: a long scan saved
            at = body.find(needle, resume)
    return sorted(spans)


def _restore(value: Any, marks: dict[str, memoryview]) -> Any:
    if isinstance(value, str):
        return marks.get(value, value)
    if isinstance(value, dict):
        return {k: _restore(v, marks) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, marks) for v in value]
    return value


def dumps_parts(content: Any, default: Callable[[Any], Any] | None = None) -> list[bytes | memoryview]:
    """JSON as parts to send in order; memoryviews in `content` are spliced in uncopied (they
    must hold text that needs no escaping, as lifted base64 does)."""
    views: list[memoryview] = []

    def splice(value: Any) -> Any:
        if isinstance(value, memoryview):
            views.append(value)
            return f"{_MARK}{len(views) - 1}."
        if default is None:
            raise TypeError(f"not JSON serializable: {type(value).__name__}")
        return default(value)

    skeleton = orjson.dumps(content, default=splice)
    if not views:
        return [skeleton]
    parts: list[bytes | memoryview] = []
    pos = 0
    for i, view in enumerate(views):
        mark = f"{_MARK}{i}.".encode()  # the dot ends the number: mark 1 is no prefix of mark 10
        at = skeleton.index(mark, pos)
        parts += [skeleton[pos:at], view]
        pos = at + len(mark)
    parts.append(skeleton[pos:])
    return parts


def dumps(content: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """As dumps_parts, joined: for small documents and event streams."""
    return b"".join(dumps_parts(content, default))


def as_text(value: str | memoryview) -> str:
    """A lifted value as a str, for the rare place that needs one."""
    return value if isinstance(value, str) else bytes(value).decode("ascii")

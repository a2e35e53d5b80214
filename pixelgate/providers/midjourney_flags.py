"""Midjourney's prompt parameters (`--ar 16:9 --v 7 --q 2`): the ranges the reference gives
(../shared/upstreams/midjourney-proxy.md and the third source document), checked before anything
is sent upstream, whichever API the prompt came through (the upstream would take the job and fail
it later, or worse, bill it). Midjourney's Capabilities name `check_flags` as their prompt rule.
"""

from __future__ import annotations

import re
from typing import Callable

from pixelgate.errors import InvalidRequest


def _number(lo: float, hi: float, whole: bool = True) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if not re.fullmatch(r"\d+" if whole else r"\d*\.?\d+", value) or not lo <= float(value) <= hi:
            return f"must be {'a whole number' if whole else 'a number'} from {lo:g} to {hi:g}"
        return None
    return check


def _one_of(*allowed: str, bare: bool = False) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if (bare and not value) or value.lower() in allowed:
            return None
        return "must be one of " + ", ".join(allowed) + (" (or nothing)" if bare else "")
    return check


def _ratio(value: str) -> str | None:
    return None if re.fullmatch(r"[1-9]\d*:[1-9]\d*", value) else "must be W:H with whole numbers, e.g. 16:9"


def _text(value: str) -> str | None:
    return None if value else "needs a value"


def _flag(value: str) -> str | None:
    return None if not value else "takes no value (parameters go at the end of the prompt)"


FLAGS: dict[str, tuple[str, Callable[[str], str | None]]] = {}
"""Every spelling of a checked parameter -> (its name, its check); from the reference's table of
Midjourney parameters. Parameters not listed here (--sref, --cref, --p, ...) go up unchecked."""
for _names, _check in (
        (("ar", "aspect"), _ratio),
        # V8 (2026-03-17), 8.1 and 8.2: Midjourney's release notes as reported (no API docs exist)
        (("v", "version"), _one_of("1", "2", "3", "4", "5", "5.1", "5.2", "6", "6.1", "7", "8", "8.1", "8.2")),
        (("niji",), _one_of("4", "5", "6", "7", bare=True)),
        (("q", "quality"), _one_of(".25", "0.25", ".5", "0.5", "1", "2", "4")),
        (("s", "stylize"), _number(0, 1000)), (("c", "chaos"), _number(0, 100)),
        (("w", "weird"), _number(0, 3000)), (("no",), _text), (("seed",), _number(0, 4294967295)),
        (("iw",), _number(0, 3, whole=False)), (("tile",), _flag),
        (("style",), _one_of("raw", "cute", "expressive", "original", "scenic", "4a", "4b", "4c")),
        (("stop",), _number(10, 100)), (("r", "repeat"), _number(1, 40)), (("sw",), _number(0, 1000)),
        (("sv",), _number(1, 6)), (("cw",), _number(0, 100)), (("ow",), _number(1, 1000)),
        (("exp",), _number(0, 100)),
        (("raw",), _flag), (("hd",), _flag), (("draft",), _flag), (("fast",), _flag), (("relax",), _flag), (("turbo",), _flag)):
    for _name in _names:
        FLAGS[_name] = (_names[-1], _check)
VERSION_RANGES = {  # (parameter, version family) -> a narrower check, where the reference gives one
    ("quality", "8"): _one_of("1", "4"),  # V8.1 (Youchuan's guide, Midjourney's partner in China)
    ("quality", "7"): _one_of("1", "2", "4"), ("quality", "6"): _one_of(".25", "0.25", ".5", "0.5", "1", "2"),
    ("quality", "5"): _one_of(".25", "0.25", ".5", "0.5", "1", "2"), ("iw", "5"): _number(0, 2, whole=False)}
PARAM = re.compile(r"(?:^|\s)(?:--|\u2014)([A-Za-z][\w-]*)")  # iOS turns -- into an em dash


def check_flags(prompt: str) -> None:
    """Refuse a prompt whose Midjourney parameters are out of range (the upstream would take the
    job and fail it later, or worse, bill it)."""
    marks = list(PARAM.finditer(prompt))
    found: list[tuple[str, str, str]] = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(prompt)
        found.append((m.group(1).lower(), m.group(1), prompt[m.end():end].strip()))
    version = next((v for k, _, v in found if k in ("v", "version", "niji") and v), "")
    for key, written, value in found:
        if key not in FLAGS:
            continue
        name, check = FLAGS[key]
        narrower = VERSION_RANGES.get((name, version[:1]))
        if problem := (narrower or check)(value):
            shown = f"--{written} {value}".strip()
            raise InvalidRequest(f"Invalid parameter '{shown}': --{name} {problem}"
                                 + (f" with version {version}" if narrower else "") + ".", field="prompt")

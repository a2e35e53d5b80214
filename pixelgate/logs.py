"""The gateway's log lines: one handler on stderr for the `pixelgate` loggers, set up once per
process by `configure` (each worker of `pixelgate serve` runs it from its app factory).

    pixelgate.access   one line per request (pixelgate/access.py), INFO
    pixelgate.*        everything else: upstream failures (WARNING), unexpected exceptions and
                       background-loop errors (ERROR, with their traceback)

A line written while a request is served carries its request id (`REQUEST_ID`, set by the
route). Two formats (`log_format`):

    text   2026-05-01T09:30:00.123Z INFO pixelgate.access POST /v1/images/generations 200 id=req_... key_id=3 ...
    json   {"time": "2026-05-01T09:30:00.123Z", "level": "info", "logger": "pixelgate.access",
            "method": "POST", "path": "/v1/images/generations", "status": 200, "request_id": "req_...", ...}
"""

from __future__ import annotations

import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("pixelgate_request_id", default=None)
"""The id of the request being served in this task, for every line logged while it runs."""

_HANDLER_NAME = "pixelgate"


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


_IN_MESSAGE = ("method", "path", "status")
_FREE_TEXT = ("key_name", "model", "channel")
"""Access fields anyone may have written; the others are ours (ids, numbers, names we chose)."""
_BARE = re.compile(r"[\w.:/@+\-]{1,200}")


def quoted(value: Any) -> str:
    """A value for a text line: as it is if it is a plain word, else JSON-quoted (a key's name or
    a model a client made up could hold spaces or a newline that would forge a line)."""
    text = str(value)
    return text if _BARE.fullmatch(text) else orjson.dumps(text[:200]).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        fields: dict[str, Any] | None = getattr(record, "access", None)
        if fields is not None:  # the message is "METHOD PATH STATUS"
            line += "".join(f" {k}={quoted(v) if k in _FREE_TEXT else v}" for k, v in fields.items()
                            if v is not None and k not in _IN_MESSAGE)
        elif (request_id := getattr(record, "request_id", None)) is not None:
            line += f" request_id={request_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "access", None)
        if fields is not None:
            out.update(fields)
        else:
            out["message"] = record.getMessage()
            if (request_id := getattr(record, "request_id", None)) is not None:
                out["request_id"] = request_id
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def _add_request_id(record: logging.LogRecord) -> bool:
    if getattr(record, "request_id", None) is None:
        record.request_id = REQUEST_ID.get()
    return True


def configure(level: str = "info", fmt: str = "text", stream: Any = None) -> None:
    """Send the `pixelgate` loggers' lines at `level` and above to stderr in `fmt`. Calling it
    again replaces the handler (a second app in one process)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_add_request_id)
    loggers = [logging.getLogger("pixelgate")]
    if fmt == "json":  # uvicorn's own lines (start-up, errors outside any route) in the same format
        loggers.append(logging.getLogger("uvicorn"))
    for logger in loggers:
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME or logger.name == "uvicorn"]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger("pixelgate").setLevel(level.upper())

"""Retired models: what a request for a model its vendor shut down gets.

The catalog (domain.catalog) says when a model retires and what succeeds it; the operator says
per model what its requests get (setting `retired_models`, "*" for every model):

  successor  (default) the request is checked as the model the client named (its documented
             limits, prices and defaults still hold), then put to the successor with its
             parameters translated: the catalog's maps first (dall-e-3 quality hd -> high), then
             whatever the successor does not take is fitted (sizes) or dropped (style)
  refuse     410 model_retired, naming the shutdown date and the successor
  upstream   sent on as it is, for a channel (another gateway) that still serves the name
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, time, timezone

from pixelgate.domain import sizes
from pixelgate.domain.catalog import Catalog, ModelEntry, RetiredPolicy, catalog
from pixelgate.domain.request import ImageRequest, Operation
from pixelgate.errors import InvalidRequest, ModelRetired
from pixelgate.providers.base import Capabilities


@dataclass(frozen=True, slots=True)
class Retirement:
    entry: ModelEntry
    successor: str | None
    policy: RetiredPolicy


def retirement(model: str, policies: dict[str, RetiredPolicy], today: date | None = None,
               cat: Catalog | None = None) -> Retirement | None:
    """How a request for `model` is handled, if its vendor has retired it; None if it has not."""
    cat = cat or catalog()
    entry = cat.get(model)
    if entry is None or entry.status(today) != "retired":
        return None
    policy = policies.get(model) or policies.get(entry.id) or policies.get("*") or "successor"
    successor = cat.successor(entry.id, today)
    if policy == "successor" and successor is None:
        policy = "refuse"  # nothing left to serve it
    return Retirement(entry, successor, policy)


def refusal(retired: Retirement, model: str) -> ModelRetired:
    instead = f" Use '{retired.successor}' instead." if retired.successor else ""
    return ModelRetired(f"The model '{model}' was retired by its vendor on {retired.entry.shutdown}.{instead}",
                        field="model")


def translate(req: ImageRequest, retired: Retirement, caps: Capabilities) -> ImageRequest:
    """`req` (already valid for the retired model) as a request to its successor, whose
    capabilities are `caps`."""
    rules = retired.entry.translate
    assert retired.successor is not None
    new = dataclasses.replace(req, model=retired.successor, extras=dict(req.extras))
    if new.operation is Operation.VARIATION and Operation.VARIATION not in caps.operations and rules.variation_prompt:
        new.operation, new.prompt = Operation.EDIT, rules.variation_prompt
    if new.quality is not None:
        new.quality = rules.quality.get(new.quality, new.quality)
        if caps.qualities is None or new.quality not in caps.qualities:
            new.quality = None
    if new.size is not None:
        new.size = rules.size.get(new.size, new.size)
        new.size = _fit_size(new.size, caps)
    for name, allowed in (("style", caps.styles), ("background", caps.backgrounds),
                          ("output_format", caps.output_formats), ("moderation", caps.moderation),
                          ("input_fidelity", caps.input_fidelity)):
        if getattr(new, name) is not None and (allowed is None or getattr(new, name) not in allowed):
            setattr(new, name, None)
    if new.output_compression is not None and not caps.output_compression:
        new.output_compression = None
    if caps.options is None:
        new.extras = {}
    else:
        new.extras = {k: v for k, v in new.extras.items() if k in caps.options.model_fields}
    return new


def delivered_size(asked: str | None, made: str | None) -> tuple[int, int] | None:
    """The pixels to scale a successor's images to: the exact size the client asked for, when the
    successor makes another (None when they agree, or the client named no exact size)."""
    if asked is None or asked == made:
        return None
    wanted = sizes.parse(asked)
    return (wanted.width, wanted.height) if wanted.width and wanted.height else None


def _fit_size(size: str, caps: Capabilities) -> str | None:
    """The size itself when the successor makes it, else the nearest it does, else its default."""
    if caps.sizes is None:
        try:
            if caps.fit_size is not None:
                caps.fit_size(sizes.parse(size))
            return size
        except InvalidRequest:
            return None
    if size in caps.sizes:
        return size
    try:
        wanted = sizes.parse(size)
        options = [sizes.parse(s) for s in caps.sizes if s != "auto"]
        return sizes.nearest(wanted, options).wxh() if options else None
    except InvalidRequest:
        return None


def model_list(served: list[tuple[str, str]], policies: dict[str, RetiredPolicy],
               today: date | None = None) -> list[dict]:
    """GET /v1/models: the models channels serve, and the retired ones their successors serve,
    each with its lifecycle (OpenAI's own list carries `shutdown_date` the same way)."""
    cat, owners = catalog(), dict(served)
    listed: dict[str, dict] = {}
    for name in [m for m, _ in served] + cat.names():
        if name in listed:
            continue
        entry = cat.get(name)
        retired = retirement(name, policies, today, cat)
        if name in owners and (retired is None or retired.policy != "refuse"):
            owner = owners[name]
        elif retired is not None and retired.policy == "successor" and retired.successor in owners:
            owner = owners[retired.successor]
        else:
            continue
        listed[name] = {
            "id": name, "object": "model", "owned_by": owner,
            "created": int(datetime.combine(entry.released, time(), timezone.utc).timestamp())
            if entry is not None and entry.released else 0,
            "status": entry.status(today) if entry is not None else "current",
            "successor": (retired.successor if retired is not None else entry.successor) if entry is not None else None,
            "shutdown_date": entry.shutdown.isoformat() if entry is not None and entry.shutdown else None,
        }
    return sorted(listed.values(), key=lambda m: m["id"])

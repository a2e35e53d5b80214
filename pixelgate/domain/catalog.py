"""The model catalog: every model pixelgate knows, as data (pixelgate/catalog.toml): who makes
it, its lifecycle (released, deprecated, shut down, successor), how a request for it maps onto
its successor, and its list prices with their source and the date they were read.

A model's status follows from its dates and today's date, so a model retires on its vendor's
shutdown date without a new release. What the gateway does with a request for a retired model
is the operator's choice per model (`retired_models` setting): serve it with the successor,
refuse it naming the successor, or pass it to the channels as it is (for an upstream, such as
another gateway, that still serves the name).

Capabilities (sizes, fields, limits) are not here: they are code, in each provider module.
"""

from __future__ import annotations

import math
import tomllib
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

CATALOG_FILE = Path(__file__).resolve().parent.parent / "catalog.toml"
Status = Literal["current", "deprecated", "retired"]
RetiredPolicy = Literal["successor", "refuse", "upstream"]


PriceDimension = Literal["quality", "size", "tier", "speed", "mask"]
"""What a price may depend on besides model and operation (services.billing.request_dimensions
reads them off a request); `mask` is "yes" for an edit with a mask."""
PRICE_DIMENSIONS: tuple[str, ...] = get_args(PriceDimension)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenRates(_Strict):
    """Prices per million tokens, as OpenAI and Google bill their multimodal image models. The
    bounds make the hold: the most one image can cost before the vendor reports its usage."""

    text_input: Decimal
    image_input: Decimal = Decimal(0)
    image_output: Decimal
    output_tokens: dict[str, int]
    """Most output tokens of one image: by quality per megapixel (`per_megapixel`, GPT image),
    or by size tier (Gemini); "*" or the largest entry for anything else."""
    per_megapixel: bool = False
    max_megapixels: float = 1.6
    """The largest image a request without an exact size can get (and the cap of any size)."""
    image_input_tokens: int = 0
    """Most input tokens one input image can count for (the hold of an edit)."""

    def most_output_tokens(self, dims: dict[str, str]) -> int:
        worst = max(self.output_tokens.values())
        if not self.per_megapixel:
            return self.output_tokens.get(dims.get("tier", ""), worst)
        rate = self.output_tokens.get(dims.get("quality", ""), worst)
        megapixels = self.max_megapixels
        if "x" in dims.get("size", ""):
            w, h = dims["size"].split("x")
            megapixels = min(megapixels, int(w) * int(h) / 1_000_000)
        return math.ceil(rate * megapixels)


class CatalogPrice(_Strict):
    """One list price: per delivered image (`amount`), or by tokens (`tokens`)."""

    amount: Decimal | None = Field(default=None, ge=0)
    tokens: TokenRates | None = None
    currency: str = "USD"
    operation: str = "*"
    dimensions: dict[PriceDimension, str] = Field(default_factory=dict)
    source: str
    """Where the price was read: a URL or a source document."""
    date: date
    """When it was read or published."""
    note: str = ""

    @model_validator(mode="after")
    def _one_unit(self) -> "CatalogPrice":
        if (self.amount is None) == (self.tokens is None):
            raise ValueError("a price has exactly one of amount (per image) and tokens")
        return self


class Translation(_Strict):
    """How a request for a retired model is put to its successor. Values not named here pass
    unchanged when the successor accepts them and are dropped when it does not."""

    quality: dict[str, str] = Field(default_factory=dict)
    size: dict[str, str] = Field(default_factory=dict)
    variation_prompt: str | None = None
    """The successor has no variation operation: a variation becomes an edit with this prompt."""


class ModelEntry(_Strict):
    id: str
    vendor: str
    name: str
    family: str = ""
    aliases: tuple[str, ...] = ()
    released: date | None = None
    deprecated: date | None = None
    """When the vendor announced the shutdown."""
    shutdown: date | None = None
    successor: str | None = None
    retired: bool = False
    """Retired at a date the vendor did not publish (a preview id that stopped answering)."""
    lifecycle_source: str = ""
    translate: Translation = Translation()
    prices: tuple[CatalogPrice, ...] = ()
    notes: str = ""

    def status(self, today: date | None = None) -> Status:
        today = today or date.today()
        if self.retired or self.shutdown is not None and self.shutdown <= today:
            return "retired"
        if self.deprecated is not None and self.deprecated <= today:
            return "deprecated"
        return "current"


class Catalog:
    def __init__(self, entries: list[ModelEntry]) -> None:
        self.entries = entries
        self._by_id: dict[str, ModelEntry] = {}
        for entry in entries:
            for name in (entry.id, *entry.aliases):
                if name in self._by_id:
                    raise ValueError(f"catalog: model {name!r} is listed twice")
                self._by_id[name] = entry
        for entry in entries:
            if entry.successor is not None and entry.successor not in self._by_id:
                raise ValueError(f"catalog: {entry.id}'s successor {entry.successor!r} is not in the catalog")

    def get(self, model: str) -> ModelEntry | None:
        return self._by_id.get(model)

    def names(self) -> list[str]:
        return list(self._by_id)

    def successor(self, model: str, today: date | None = None) -> str | None:
        """The model that serves requests for a retired one: the first of its successors that
        is not retired itself (dall-e-3 -> gpt-image-1 -> ... -> the current one)."""
        entry, seen = self.get(model), set()
        while entry is not None and entry.successor is not None and entry.id not in seen:
            seen.add(entry.id)
            entry = self.get(entry.successor)
            if entry is not None and entry.status(today) != "retired":
                return entry.id
        return None


def load(path: Path = CATALOG_FILE) -> Catalog:
    """Each model's `price_source` and `price_date` are the default of its prices' own. A model
    with `price_as = "other"` is billed at the other model's prices (source and date included),
    its `price_note` saying why."""
    with path.open("rb") as f:
        raw = tomllib.load(f)["models"]
    entries = []
    for model_id, fields in raw.items():
        fields = dict(fields)
        if (same := fields.pop("price_as", None)) is not None:
            other = raw.get(same)
            if other is None or "price_as" in other or "prices" in fields:
                raise ValueError(f"catalog: {model_id}'s price_as {same!r} must name a model with prices of its own")
            note = fields.pop("price_note", "")
            fields.update(prices=other["prices"], price_date=other["price_date"],
                          price_source=f"priced as {same}" + (f" ({note})" if note else ""))
        source, read = fields.pop("price_source", None), fields.pop("price_date", None)
        fields["prices"] = [{"source": source, "date": read, **p} for p in fields.get("prices", [])]
        entries.append(ModelEntry(id=model_id, **fields))
    return Catalog(entries)


@cache
def catalog() -> Catalog:
    """The catalog shipped with pixelgate."""
    return load()

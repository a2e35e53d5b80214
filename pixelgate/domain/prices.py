"""Prices: the built-in table (from the catalog, pixelgate/catalog.toml, each entry with its
source and date) and the arithmetic of a price, per image or by tokens.

A per-image price is per delivered image (a Midjourney task delivers one grid, so per task).
A token price is what OpenAI's GPT image and Google's Gemini image models bill: the hold is
the most an image can cost, the charge is the usage the vendor reports. Dimensions narrow an
entry: the most specific matching entry wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pixelgate.domain.catalog import TokenRates, catalog

MILLION = Decimal(1_000_000)
CENT = Decimal("0.00000001")


@dataclass(frozen=True)
class Price:
    model: str
    amount: Decimal
    """Per delivered image; for a token price, 0 (see `tokens`)."""
    currency: str
    operation: str = "*"
    dimensions: dict[str, str] = field(default_factory=dict)
    source: str = ""
    date: str = ""
    tokens: TokenRates | None = None

    @property
    def specificity(self) -> int:
        return len(self.dimensions) + (self.operation != "*")

    def describe(self) -> str:
        return describe(self.amount, self.tokens, self.currency)


def describe(amount: Decimal, tokens: TokenRates | None, currency: str) -> str:
    """A price as people read it: per image, or per million tokens (README tables, console)."""
    if tokens is None:
        return _money(amount, currency)
    parts = [f"text in {_money(tokens.text_input, currency)}"]
    if tokens.image_input:
        parts.append(f"image in {_money(tokens.image_input, currency)}")
    parts.append(f"image out {_money(tokens.image_output, currency)}")
    return " / ".join(parts) + " per 1M tokens"


def _money(amount: Decimal, currency: str) -> str:
    text = format(amount.normalize(), "f")
    return f"US${text}" if currency == "USD" else f"{text} {currency}"


@dataclass(frozen=True)
class TokenUsage:
    """What a vendor reports one call consumed, in OpenAI's terms."""

    text_input: int = 0
    image_input: int = 0
    output: int = 0

    def __add__(self, other: "TokenUsage") -> "TokenUsage":
        return TokenUsage(self.text_input + other.text_input, self.image_input + other.image_input,
                          self.output + other.output)

    def as_dict(self) -> dict[str, int]:
        return {"text_input": self.text_input, "image_input": self.image_input, "output": self.output}


def token_usage(usage: Any) -> TokenUsage | None:
    """A vendor's usage report as TokenUsage: OpenAI's `usage` ({input_tokens,
    input_tokens_details: {text_tokens, image_tokens}, output_tokens}), Gemini's
    `usageMetadata` ({promptTokenCount, candidatesTokenCount, promptTokensDetails}), or our own
    (`as_dict`, as a task keeps it). None when there is none or it cannot be read."""
    if not isinstance(usage, dict):
        return None
    try:
        if "output" in usage:
            return TokenUsage(int(usage["text_input"]), int(usage["image_input"]), int(usage["output"]))
        if "output_tokens" in usage:
            details = usage.get("input_tokens_details") or {}
            text = int(details.get("text_tokens", usage.get("input_tokens", 0)))
            return TokenUsage(text, int(details.get("image_tokens", 0)), int(usage["output_tokens"]))
        if "candidatesTokenCount" in usage:
            by_kind = {d.get("modality"): int(d.get("tokenCount", 0)) for d in usage.get("promptTokensDetails") or []}
            prompt = int(usage.get("promptTokenCount", 0))
            image = by_kind.get("IMAGE", 0)
            return TokenUsage(prompt - image, image, int(usage["candidatesTokenCount"]))
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def token_cost(rates: TokenRates, usage: TokenUsage) -> Decimal:
    """What `usage` costs at `rates`, in the price's currency."""
    return (rates.text_input * usage.text_input + rates.image_input * usage.image_input
            + rates.image_output * usage.output) / MILLION


def most_token_cost(rates: TokenRates, dims: dict[str, str], prompt: str | None, input_images: int) -> Decimal:
    """The most one image can cost: the largest output it can have, and an input no larger than
    the prompt's bytes (a token is at least a byte) plus the input images' cap."""
    worst = TokenUsage(len((prompt or "").encode()), rates.image_input_tokens * input_images,
                       rates.most_output_tokens(dims))
    return token_cost(rates, worst).quantize(CENT, rounding=ROUND_HALF_UP)


def _built_in() -> list[Price]:
    prices: list[Price] = []
    for entry in catalog().entries:
        for p in entry.prices:
            for model in (entry.id, *entry.aliases):
                prices.append(Price(model, p.amount if p.amount is not None else Decimal(0), p.currency,
                                    p.operation, dict(p.dimensions), p.source, p.date.isoformat(), p.tokens))
    return prices


DEFAULT_PRICES: list[Price] = _built_in()

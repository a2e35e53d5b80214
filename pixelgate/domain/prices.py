"""The built-in price table, from the source documents' own tables. Each entry says where it
comes from; operators override any of them (config file or admin API) and add the rest.

A price is per delivered image (a Midjourney task delivers one grid, so per task). Dimensions
narrow an entry: the most specific matching entry wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Price:
    model: str
    amount: Decimal
    currency: str
    operation: str = "*"
    dimensions: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def specificity(self) -> int:
        return len(self.dimensions) + (self.operation != "*")


D002 = "source document 002 (DALL-E / Midjourney price table, CNY)"
D001_V3 = "source document 001 (Ideogram V3 price table, USD)"
D001_V2 = "source document 001 (Ideogram V2 & V1 price table, USD)"


def _p(model: str, amount: str, currency: str, source: str, operation: str = "*", **dims: str) -> Price:
    return Price(model, Decimal(amount), currency, operation, dims, source)


DEFAULT_PRICES: list[Price] = [
    _p("dall-e-3", "0.28", "CNY", D002),  # 1024x1024, the model's default size
    _p("dall-e-3", "0.42", "CNY", D002, size="1024x1792"),
    _p("dall-e-3", "0.42", "CNY", D002 + "; 1792x1024 assumed to cost as 1024x1792", size="1792x1024"),
    _p("dall-e-2", "0.14", "CNY", D002 + "; the 1024x1024 price, also used for smaller sizes"),
    _p("midjourney", "0.35", "CNY", D002 + "; per task"),
    _p("mj", "0.35", "CNY", D002 + "; per task"),
    # Ideogram 3.0 by rendering speed and operation; DEFAULT speed when none is given
    *[_p(model, amount, "USD", D001_V3, operation, speed=speed)
      for model in ("V3", "ideogram-v3", "V_3")
      for speed, row in {"TURBO": ("0.03", "0.03", "0.06", "0.06", "0.06"),
                         "DEFAULT": ("0.06",) * 5, "QUALITY": ("0.09",) * 5}.items()
      for operation, amount in zip(("generate", "remix", "edit", "reframe", "replace_background"), row)],
    *[_p(model, "0.06", "USD", D001_V3 + "; DEFAULT speed") for model in ("V3", "ideogram-v3", "V_3")],
    # Ideogram 2.0 / 1.0: generate and remix ("text, or text + reference image"), edit, upscale
    *[_p(model, amount, "USD", D001_V2, operation)
      for model, amount in {"V_2A": "0.04", "V_2A_TURBO": "0.025", "V_2": "0.08", "V_2_TURBO": "0.05",
                            "V_1": "0.06", "V_1_TURBO": "0.02"}.items()
      for operation in ("generate", "remix")],
    _p("V_2", "0.08", "USD", D001_V2, "edit"),
    _p("V_2_TURBO", "0.05", "USD", D001_V2, "edit"),
    *[_p(model, "0.06", "USD", D001_V2, "upscale")
      for model in ("V_1", "V_1_TURBO", "V_2", "V_2_TURBO", "V_2A", "V_2A_TURBO", "V3")],
    # the offline sandbox costs nothing
    *[_p(model, "0", "USD", "built-in offline provider") for model in ("sandbox-image", "sandbox-slow", "sandbox-async")],
]

"""The README's model and price tables, written from the catalog (pixelgate/catalog.toml), so
that they cannot drift from it: `pixelgate catalog --write-readme` rewrites them, and a test
fails when the README differs. Each table sits between `<!-- catalog:NAME -->` and
`<!-- /catalog:NAME -->`.
"""

from __future__ import annotations

import re
from pixelgate.domain.catalog import CatalogPrice, ModelEntry, catalog
from pixelgate.domain.prices import describe

_VENDORS = {"openai": "OpenAI", "google": "Google", "bfl": "Black Forest Labs", "ideogram": "Ideogram",
            "ark": "Volcengine Ark", "dashscope": "Alibaba DashScope", "qianfan": "Baidu Qianfan",
            "midjourney": "Midjourney", "stability": "Stability AI", "pixelgate": "pixelgate",
            "bedrock": "AWS Bedrock"}


def _names(entry: ModelEntry) -> str:
    aliases = ", ".join(f"`{a}`" for a in entry.aliases)
    return f"`{entry.id}`" + (f" ({aliases})" if aliases else "")


def _end(entry: ModelEntry) -> str:
    """When the vendor shuts it down: dates only, so the table does not change with the calendar."""
    if entry.shutdown:
        return str(entry.shutdown)
    if entry.retired:
        return "shut down (no date published)"
    if entry.deprecated:
        return f"deprecated {entry.deprecated}, no date yet"
    return ""


def models_table() -> str:
    rows = ["| model | vendor | released | shut down | successor |", "|---|---|---|---|---|"]
    for entry in catalog().entries:
        successor = f"`{entry.successor}`" if entry.successor else ""
        rows.append(f"| {_names(entry)} | {_VENDORS.get(entry.vendor, entry.vendor)} | {entry.released or ''} "
                    f"| {_end(entry)} | {successor} |")
    return "\n".join(rows)


def _price(p: CatalogPrice) -> str:
    scope = [p.operation] if p.operation != "*" else []
    scope += ["with a mask" if k == "mask" else v for k, v in p.dimensions.items()]
    return describe(p.amount, p.tokens, p.currency) + (f" ({', '.join(scope)})" if scope else "")


def prices_table() -> str:
    rows = ["| model | price per image (or per 1M tokens) | source | read |", "|---|---|---|---|"]
    for entry in catalog().entries:
        sources = list(dict.fromkeys(p.source for p in entry.prices))
        dates = sorted({p.date for p in entry.prices})
        rows.append(f"| {_names(entry)} | {'; '.join(_price(p) for p in entry.prices)} "
                    f"| {'; '.join(_link(s) for s in sources)} | {dates[-1] if dates else ''} |")
    return "\n".join(rows)


def _link(source: str) -> str:
    """A source that is a URL (perhaps followed by words) as a Markdown link."""
    match = re.match(r"(https?://\S+)(.*)", source)
    if not match:
        return source.replace("|", "\\|")
    url, rest = match.groups()
    return f"[{url.split('://', 1)[1]}]({url}){rest}".replace("|", "\\|")


TABLES = {"models": models_table, "prices": prices_table}


def render_readme(text: str) -> str:
    """`text` with every catalog table rewritten from the catalog."""
    for name, render in TABLES.items():
        pattern = re.compile(rf"(<!-- catalog:{name} -->\n)(?:.*?\n)?(<!-- /catalog:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- catalog:{name} --> ... <!-- /catalog:{name} --> block")
        table = render()
        text = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)
    return text

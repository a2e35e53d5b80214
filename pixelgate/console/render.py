"""Turning a page's data into HTML: the Jinja environment, its filters (money, price terms) and
the headers every console answer carries. The environment is made when the first page is
rendered (templates()): a gateway whose console is never opened loads no Jinja."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from pixelgate.console.session import csrf_token
from pixelgate.services.shared import Services
from pixelgate.services.storage import UrlSigner, file_name

if TYPE_CHECKING:
    from jinja2 import Environment

HERE = Path(__file__).parent
SCALE = 8
"""Decimals the ledger keeps (money columns are NUMERIC(20, 8)): the most an amount shows."""
MINOR_UNITS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                                "VND", "VUV", "XAF", "XOF", "XPF"), 0),
               **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3)}
"""ISO 4217 minor units where they are not 2."""
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "¥", "INR": "₹", "KRW": "₩"}
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-frame-options": "DENY",  # no page of the console may be framed (clickjacking a Disable button)
    "content-security-policy": "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # a request id or task id in a URL stays on this site
}


def money(amount: Any, currency: str) -> str:
    """An amount as people read it: the currency's minor units at least ($5.00), more decimals
    only where they are not zero ($0.0025, $0.821684), at most the ledger's 8. Never a float's
    noise or exponent notation; None (no balance, no cost) is a dash."""
    if amount is None or amount == "":
        return "—"
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    except InvalidOperation:
        return str(amount)
    if not value.is_finite():
        return str(value)
    with localcontext() as exact:
        exact.prec = 60  # the quantize below must not round a large amount
        value = value.quantize(Decimal(1).scaleb(-SCALE))
        places = min(SCALE, max(MINOR_UNITS.get(currency, 2), -value.normalize().as_tuple().exponent))
        text = f"{abs(value):,.{places}f}"
    sign = "-" if value < 0 else ""
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {currency}"


def _money_filter(context, amount: Any, currency: str | None = None) -> str:
    return money(amount, currency or context.get("currency") or "USD")


def price_terms(operation: str, dimensions: dict, tokens: Any = None) -> str:
    """What a price is for, in words: "per image, 1024x1024, quality high"."""
    parts = ["per 1M tokens" if tokens is not None else "per image"]
    if operation and operation != "*":
        parts.append(f"{operation} only")
    dims = dict(dimensions or {})
    if "size" in dims:
        parts.append(str(dims.pop("size")))
    parts += [f"{name} {value}" for name, value in sorted(dims.items())]
    return ", ".join(parts)


@cache
def templates() -> Environment:
    """The console's Jinja environment, made (and Jinja imported) on the first page rendered."""
    from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape

    environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    environment.filters["money"] = pass_context(_money_filter)
    return environment


def render(request: Request, services: Services, template: str, /, *, http_status: int = 200,
           nav: list | None = None, **context: Any) -> HTMLResponse:
    session = getattr(request.state, "console_session", None)  # read by the route, if signed in
    html = templates().get_template(template).render(
        request=request, nav=nav or [], csrf=csrf_token(services.signer, session.id) if session else "",
        image_url=lambda image: image_url(request, services.signer, image), price_terms=price_terms,
        **{"currency": services.engine.billing.currency, **context})
    return HTMLResponse(html, status_code=http_status)  # ConsoleRoute adds SECURITY_HEADERS


def image_url(request: Request, signer: UrlSigner, image: dict) -> str:
    return signer.url(str(request.base_url), file_name(image["id"], image["format"]))

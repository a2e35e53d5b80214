"""Prices and money: quote, hold, settle. The only module that moves a balance.

  quote   the unit price of a request (operator prices beat the built-in defaults, then the most
          specific matching entry wins), converted into the gateway's currency and marked up for the key's
          account and group, exact Decimal arithmetic. A token price quotes the most one image
          can cost, and charges the usage the vendor reports
  hold    before any upstream call: reserve the most the request can cost, in ONE conditional
          UPDATE (available = balance - reserved must cover it), so two concurrent requests can
          never both spend the last unit; a ledger row records it
  settle  once the outcome is known: charge the images actually delivered (0 on failure or
          cancel) and free the rest of the hold. (request_id, kind) is unique in the ledger, so
          a request is settled once even if a retry, a race or a restart tries again
  sweep   a hold is owned either by a live request, which renews its lease while it runs, or by
          a task row written in the same transaction (which settles it with its outcome); a
          request hold whose lease ran out unsettled lost its process, and is released
  charge  a process that was only stalled (paused, swapped out, a frozen VM) looks dead too: if
          its request delivers after its hold was released, it is charged anew, once, as a hold
          would be taken (402 if the balance no longer covers it), never handed out unpaid

Keys without an account are unlimited: nothing is held, but every cost is still recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import case, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from pixelgate.db.models import Account, LedgerEntry, PriceRow
from pixelgate.db.session import read_rows
from pixelgate.domain import sizes
from pixelgate.domain.prices import (CENT, DEFAULT_PRICES, Price, TokenRates, TokenUsage, most_token_cost,
                                     token_cost)
from pixelgate.domain.request import ImageRequest
from pixelgate.errors import InsufficientBalance, InvalidRequest, NotFound, NotPriced



def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Quote:
    unit_price: Decimal
    """The most one image can cost, in the gateway's currency, marked up: the hold per image."""
    price: Price | None
    factor: Decimal = Decimal(1)
    """Exchange rate times markup: the price's currency to what the client pays."""

    def charge(self, delivered: int, usage: TokenUsage | None = None) -> Decimal:
        """What the delivered images cost: by the reported usage for a token price, else per image."""
        if self.price is not None and self.price.tokens is not None and usage is not None and delivered:
            return (token_cost(self.price.tokens, usage) * self.factor).quantize(CENT, rounding=ROUND_HALF_UP)
        return self.unit_price * delivered

    def snapshot(self) -> dict:
        """The quote as a task row keeps it, so that any worker charges it alike."""
        tokens = self.price.tokens if self.price is not None else None
        return {"unit_price": str(self.unit_price), "factor": str(self.factor),
                "tokens": tokens.model_dump(mode="json") if tokens is not None else None}

    @classmethod
    def from_snapshot(cls, snap: dict) -> "Quote":
        tokens = TokenRates.model_validate(snap["tokens"]) if snap.get("tokens") else None
        price = Price("", Decimal(0), "", tokens=tokens) if tokens is not None else None
        return cls(Decimal(snap.get("unit_price", "0")), price, Decimal(snap.get("factor", "1")))


def request_dimensions(req: ImageRequest) -> dict[str, str]:
    """The dimensions a price may depend on, as the request states them."""
    dims: dict[str, str] = {}
    if req.quality:
        dims["quality"] = req.quality
    if req.mask is not None:  # a masked edit may be another endpoint at another price (Stability's inpaint)
        dims["mask"] = "yes"
    speed = req.extras.get("rendering_speed") or req.extras.get("mode")  # Ideogram's; Midjourney's
    if isinstance(speed, str):
        dims["speed"] = speed
    if req.size:
        try:
            size = sizes.parse(req.size)
        except InvalidRequest:
            return dims
        if size.width:
            dims["size"] = size.wxh()
            dims["tier"] = sizes.tier_of(size.width, size.height)
        elif size.tier:
            dims["tier"] = size.tier
    resolution = req.extras.get("resolution")  # FLUX 3's own tier (768sq, 1k, 1.5k, 2k, 4k) wins;
    if isinstance(resolution, str) and resolution.endswith(("k", "sq")):  # Ideogram's "1312x736" is a size
        dims["tier"] = resolution.upper() if resolution.endswith("k") else resolution
    return dims


class Billing:
    def __init__(self, sessions: async_sessionmaker, currency: str, rates: dict[str, Decimal],
                 unpriced: str, configured: list[Price], cache_seconds: float) -> None:
        self._sessions = sessions
        self.currency = currency
        self._rates = rates
        self._unpriced = unpriced
        self._configured = configured
        self._cache_seconds = cache_seconds
        self._table: dict[str, list[tuple[int, Price]]] = {}
        self._expires = 0.0
        self._reloading = asyncio.Lock()

    # -- prices --

    async def table(self) -> dict[str, list[tuple[int, Price]]]:
        """model -> [(precedence, price)]: admin 3, config file 2, built-in 1."""
        if time.monotonic() < self._expires:
            return self._table
        async with self._reloading:  # one reload at a time: the others wait for its result
            if time.monotonic() < self._expires:
                return self._table
            rows = await read_rows(self._sessions, select(PriceRow).order_by(PriceRow.id), scalars=True)
            return self._build(rows)

    def _build(self, rows: list[PriceRow]) -> dict[str, list[tuple[int, Price]]]:
        table: dict[str, list[tuple[int, Price]]] = {}
        for rank, prices in ((1, DEFAULT_PRICES), (2, self._configured),
                             (3, [Price(r.model, Decimal(r.amount), r.currency, r.operation, dict(r.dimensions),
                                        f"admin (price #{r.id})",
                                        tokens=TokenRates.model_validate(r.tokens) if r.tokens else None)
                                  for r in rows])):
            for price in prices:
                table.setdefault(price.model, []).append((rank, price))
        self._table, self._expires = table, time.monotonic() + self._cache_seconds
        return table

    def forget(self) -> None:
        self._expires = 0.0

    async def set_price(self, model: str, amount: Decimal, currency: str | None = None, operation: str = "*",
                        dimensions: dict[str, str] | None = None,
                        tokens: TokenRates | None = None) -> tuple[PriceRow, bool]:
        """The operator's price for (model, operation, dimensions), the admin API's and the
        console's alike: it replaces the one set before for the same entry (the newest wins),
        keeping its id. Returns the row and whether it is new. The caller announces the change."""
        dimensions = dict(dimensions or {})
        values = dict(amount=Decimal(0) if tokens else amount, currency=currency or self.currency,
                      tokens=tokens.model_dump(mode="json") if tokens else None, source="admin", created_at=_now())
        async with self._sessions() as session, session.begin():
            same = [r for r in (await session.execute(select(PriceRow).where(
                PriceRow.model == model, PriceRow.operation == operation).order_by(PriceRow.id.desc()))).scalars()
                    if dict(r.dimensions or {}) == dimensions]
            for older in same[1:]:  # set twice before replacing existed: one entry is left
                await session.delete(older)
            row = same[0] if same else PriceRow(model=model, operation=operation, dimensions=dimensions)
            for name, value in values.items():
                setattr(row, name, value)
            session.add(row)
        self.forget()
        return row, not same

    async def quote(self, req: ImageRequest, markup: Decimal = Decimal(1), model: str | None = None) -> Quote:
        """The most one image of `req` can cost the client, or NotPriced when the operator has
        said unpriced models are refused (the default). `model`: price it as this model (a
        retired model served by its successor that has no price of its own)."""
        model = model or req.model
        dims = request_dimensions(req)
        candidates = [(rank, price.specificity, i, price)
                      for i, (rank, price) in enumerate((await self.table()).get(model, []))
                      if price.operation in ("*", req.operation.value)
                      and all(dims.get(k) == v for k, v in price.dimensions.items())]
        if not candidates:
            if self._unpriced == "free":
                return Quote(Decimal(0), None)
            raise NotPriced(f"Model '{req.model}' has no price for this request, and the gateway refuses "
                            "unpriced models. The operator can add a price (admin API /admin/prices or "
                            "the config file) or set unpriced = \"free\".", field="model")
        # the operator's prices beat the built-in ones whatever their detail; within one origin, the
        # most specific matching entry wins, and of equals the one set last
        *_, price = max(candidates, key=lambda c: c[:3])
        factor = self.rate(price.currency, model) * markup
        amount = price.amount
        if price.tokens is not None:
            amount = most_token_cost(price.tokens, dims, req.prompt, len(req.images) + len(req.style_images))
        return Quote((amount * factor).quantize(CENT, rounding=ROUND_HALF_UP), price, factor)

    def rate(self, currency: str, model: str = "") -> Decimal:
        """How much of the gateway's currency one unit of `currency` is."""
        if currency == self.currency:
            return Decimal(1)
        rate = self._rates.get(currency)
        if rate is None:
            raise NotPriced(f"The price of '{model}' is in {currency}, and no exchange rate from {currency} "
                            f"to {self.currency} is configured (exchange_rates).", field="model")
        return rate

    def convert(self, amount: Decimal, currency: str, model: str = "") -> Decimal:
        return (amount * self.rate(currency, model)).quantize(CENT, rounding=ROUND_HALF_UP)

    # -- holds and settlement --

    async def hold(self, account_id: int | None, request_id: str, unit_price: Decimal, n: int,
                   lease_seconds: float | None = None, session: AsyncSession | None = None) -> bool:
        """Reserve unit_price * n on the account, or raise InsufficientBalance. False when the
        key has no account (nothing to hold). With `lease_seconds` the hold belongs to a live
        request, which renews it (`renew`); without, to a task row written in the same
        `session`, which settles it. Either way no hold outlives its owner unsettled."""
        if account_id is None:
            return False
        if session is None:
            async with self._sessions() as own, own.begin():
                return await self.hold(account_id, request_id, unit_price, n, lease_seconds, own)
        amount = unit_price * n
        won = await session.execute(
            update(Account).where(
                Account.id == account_id,
                or_(Account.balance.is_(None), Account.balance - Account.reserved >= amount),
                or_(Account.spend_limit.is_(None), Account.spent + Account.reserved + amount <= Account.spend_limit))
            .values(reserved=Account.reserved + amount))
        if won.rowcount != 1:
            raise InsufficientBalance(
                f"Insufficient balance: this request can cost up to {amount.normalize()} {self.currency}.")
        lease = _now() + timedelta(seconds=lease_seconds) if lease_seconds else None
        session.add(LedgerEntry(account_id=account_id, request_id=request_id, kind="hold", amount=amount,
                                unit_price=unit_price, lease_until=lease))
        return True

    async def renew(self, request_id: str, lease_seconds: float) -> None:
        """The request that owns this hold is still running."""
        async with self._sessions() as session, session.begin():
            await session.execute(update(LedgerEntry).where(
                LedgerEntry.request_id == request_id, LedgerEntry.kind == "hold",
                LedgerEntry.lease_until.is_not(None)).values(lease_until=_now() + timedelta(seconds=lease_seconds)))

    async def settle(self, request_id: str, delivered: int, session: AsyncSession | None = None,
                     charge: Decimal | None = None) -> Decimal | None:
        """Charge what was delivered and free the rest of the hold, once. Returns the charge, or
        None when there was no hold or it was settled already. `charge`: the cost as the quote
        computes it from the vendor's usage (never more than the hold); else the unit price
        per image delivered. In a caller's `session` the settlement commits (or not) with the
        caller's other writes: a task's outcome."""
        if session is None:
            try:
                async with self._sessions() as own, own.begin():
                    return await self.settle(request_id, delivered, own, charge)
            except IntegrityError:  # (request_id, kind) is unique: settled by another already
                return None
        hold = (await session.execute(select(LedgerEntry).where(
            LedgerEntry.request_id == request_id, LedgerEntry.kind == "hold"))).scalar_one_or_none()
        if hold is None:
            return None
        settled = (await session.execute(select(LedgerEntry.id).where(
            LedgerEntry.request_id == request_id, LedgerEntry.kind == "settle"))).first()
        if settled is not None:
            return None
        if charge is None:
            charge = Decimal(hold.unit_price) * delivered
        charge = min(charge, Decimal(hold.amount))
        session.add(LedgerEntry(account_id=hold.account_id, request_id=request_id, kind="settle",
                                amount=charge, unit_price=hold.unit_price))
        await session.flush()  # the unique (request_id, kind) stops a concurrent second settlement
        await session.execute(update(Account).where(Account.id == hold.account_id).values(
            reserved=Account.reserved - hold.amount, spent=Account.spent + charge,
            balance=case((Account.balance.is_(None), None), else_=Account.balance - charge)))
        return charge

    async def charge_released(self, account_id: int, request_id: str, amount: Decimal) -> Decimal:
        """Charge `amount` to a request whose hold was released before it settled (see `charge`
        above): one conditional UPDATE, as `hold` takes one, and a `charge` ledger row, unique
        per request. InsufficientBalance if the account cannot cover it now."""
        async with self._sessions() as session, session.begin():
            won = await session.execute(
                update(Account).where(
                    Account.id == account_id,
                    or_(Account.balance.is_(None), Account.balance - Account.reserved >= amount),
                    or_(Account.spend_limit.is_(None), Account.spent + Account.reserved + amount <= Account.spend_limit))
                .values(spent=Account.spent + amount,
                        balance=case((Account.balance.is_(None), None), else_=Account.balance - amount)))
            if won.rowcount != 1:
                raise InsufficientBalance(
                    f"Insufficient balance: this request took so long that its hold was released, and its "
                    f"{amount.normalize()} {self.currency} can no longer be charged.")
            session.add(LedgerEntry(account_id=account_id, request_id=request_id, kind="charge", amount=amount))
        return amount

    async def release_abandoned(self, grace_seconds: float = 0) -> int:
        """Release (settle at 0) the holds whose request stopped renewing them: its process died
        between hold and settle. Returns how many."""
        settled = aliased(LedgerEntry)
        async with self._sessions() as session:
            stale = list((await session.execute(
                select(LedgerEntry.request_id).where(
                    LedgerEntry.kind == "hold", LedgerEntry.lease_until.is_not(None),
                    LedgerEntry.lease_until < _now() - timedelta(seconds=grace_seconds),
                    ~select(settled.id).where(settled.request_id == LedgerEntry.request_id,
                                              settled.kind == "settle").exists())
                .limit(500))).scalars())
        released = 0
        for request_id in stale:
            if await self.settle(request_id, 0) is not None:
                released += 1
        return released

    # -- accounts --

    async def create_account(self, name: str, balance: Decimal | None, spend_limit: Decimal | None,
                             markup: Decimal = Decimal(1)) -> Account:
        account = Account(name=name, balance=balance, reserved=Decimal(0), spent=Decimal(0), spend_limit=spend_limit,
                          markup=markup)
        async with self._sessions() as session, session.begin():
            session.add(account)
        return account

    async def update_account(self, account_id: int, **fields) -> Account:
        if not fields:
            return await self.account(account_id)
        async with self._sessions() as session, session.begin():
            if (await session.execute(update(Account).where(Account.id == account_id).values(**fields))).rowcount != 1:
                raise NotFound(f"No account with id {account_id}.", field="account_id")
        return await self.account(account_id)

    async def account(self, account_id: int) -> Account:
        async with self._sessions() as session:
            account = await session.get(Account, account_id)
        if account is None:
            raise NotFound(f"No account with id {account_id}.", field="account_id")
        return account

    async def top_up(self, account_id: int, amount: Decimal, reference: str) -> Account:
        """Add to (or, negative, take from) a balance, once per reference."""
        try:
            async with self._sessions() as session, session.begin():
                won = await session.execute(update(Account).where(Account.id == account_id).values(
                    balance=case((Account.balance.is_(None), amount), else_=Account.balance + amount)))
                if won.rowcount != 1:
                    raise NotFound(f"No account with id {account_id}.", field="account_id")
                session.add(LedgerEntry(account_id=account_id, request_id=reference, kind="topup", amount=amount))
        except IntegrityError:
            raise InvalidRequest(f"Top-up '{reference}' was already applied.", field="reference",
                                 code="duplicate_topup") from None
        return await self.account(account_id)

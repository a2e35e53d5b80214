"""Channels: which upstreams serve a model, in which order they are tried, and their CRUD.

The database is the one source of truth (`serve` and `pixelgate config apply` bring the
configuration's channels into it: `reconcile`),
so every worker and instance routes alike. Each process trusts what it read for
`cache_seconds`; a change made through this process is seen at once.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from pixelgate.config import ChannelConfig
from pixelgate.db.models import ChannelRow
from pixelgate.db.session import read_rows
from pixelgate.domain.catalog import catalog
from pixelgate.errors import InvalidRequest, ModelNotFound, NoChannelAvailable, NotFound
from pixelgate.providers import REGISTRY
from pixelgate.providers.base import Capabilities, Channel
from pixelgate.providers.sandbox import Sandbox

SANDBOX_CHANNEL = "sandbox"
SIMULATED_PREFIX = "simulated-"
EDITABLE = ("provider", "base_url", "api_key", "api_key_env", "models", "model_map", "priority",
            "weight", "enabled", "timeout_seconds", "options")

# Every model a provider declares, with its capabilities: a model behaves the same whichever
# channel serves it (dall-e-3 takes n=1 through OpenAI itself or through another gateway).
KNOWN_MODELS: dict[str, tuple[str, Capabilities]] = {}
for _provider in REGISTRY.values():
    for _model, _caps in _provider.models.items():
        KNOWN_MODELS.setdefault(_model, (_provider.name, _caps))


def _with_successors(models: list[str], provider) -> list[str]:
    """A channel's models, and the successors its vendor makes of those of them that the vendor
    retired: a channel whose key made dall-e-3 makes its successor (services.lifecycle)."""
    cat, extra = catalog(), []
    for model in models:
        successor = cat.successor(model) if (entry := cat.get(model)) and entry.status() == "retired" else None
        if successor is not None and successor in provider.models and successor not in models:
            extra.append(successor)
    return [*models, *dict.fromkeys(extra)]


def channel_view(row: ChannelRow) -> dict:
    """A channel as the admin API, the CLI and the console show it: the upstream key itself never
    leaves, only enough of it to tell which it is (`api_key_hint`)."""
    return {"name": row.name, "provider": row.provider, "base_url": row.base_url,
            "has_api_key": bool(row.api_key or row.api_key_env), "api_key_hint": key_hint(row.api_key),
            "api_key_env": row.api_key_env,
            "models": row.models, "model_map": row.model_map, "priority": row.priority,
            "weight": row.weight, "enabled": row.enabled, "timeout_seconds": row.timeout_seconds,
            "options": row.options or {}, "source": row.source}


def key_hint(key: str | None) -> str | None:
    """A key as vendors' dashboards show it, "sk-...abcd": its first three and last four
    characters, and only those of a key long enough to keep most of itself hidden."""
    if not key:
        return None
    return f"{key[:3]}...{key[-4:]}" if len(key) >= 16 else "..."


def built_in(name: str) -> bool:
    """A channel the gateway makes itself when a switch is on (sandbox, simulate_vendors)."""
    return name == SANDBOX_CHANNEL or name.startswith(SIMULATED_PREFIX)


@dataclass
class Reconciled:
    """What bringing the configuration's channels into the database did (or, dry, would do)."""

    added: list[str] = field(default_factory=list)
    changed: list[tuple[str, list[str]]] = field(default_factory=list)
    """Each with the fields that changed."""
    removed: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    """Built-in channels whose switch is off."""
    stale: list[str] = field(default_factory=list)
    """Configured channels the configuration no longer declares: left serving, reported."""
    kept: list[str] = field(default_factory=list)
    """Configured names a channel made or changed at run time holds: it wins over the file."""

    @property
    def writes(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.disabled)


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    capabilities: Capabilities
    channels: tuple[Channel, ...]


class ChannelDirectory:
    def __init__(self, sessions: async_sessionmaker, cache_seconds: float = 2.0) -> None:
        self._sessions = sessions
        self._cache_seconds = cache_seconds
        self._routes: dict[str, Route] = {}
        self._has_disabled: set[str] = set()
        self._by_name: dict[str, Channel] = {}
        self._expires = 0.0
        self._reloading = asyncio.Lock()
        self.announce: Callable[[str], Awaitable[None]] | None = None

    async def route(self, model: str, provider: str | None = None) -> Route:
        """The model's capabilities and its enabled channels, best first (priority, then a
        weighted shuffle so that load spreads by weight). With `provider`, that provider's
        channels are used when any of them serves the model."""
        routes = await self._snapshot()
        found = routes.get(model)
        if found is None:
            if model in self._has_disabled:
                raise NoChannelAvailable(f"Every channel serving model '{model}' is disabled.")
            raise ModelNotFound(f"The model '{model}' does not exist or no channel serves it.",
                                field="model")
        channels = found.channels
        if provider is not None and any(c.provider == provider for c in channels):
            channels = tuple(c for c in channels if c.provider == provider)
            own = REGISTRY[provider]
            caps = own.models.get(model) or own.models.get(channels[0].upstream_model(model)) or found.capabilities
            found = Route(model, caps, channels)
        ordered = sorted(channels, key=lambda c: (-c.priority, -random.random() ** (1.0 / c.weight)))
        return Route(found.model, found.capabilities, tuple(ordered))

    async def channel(self, name: str) -> Channel:
        """A channel by name, enabled or not: an accepted job is followed to its end even if its
        channel was disabled meanwhile."""
        await self._snapshot()
        found = self._by_name.get(name)
        if found is None:
            raise NoChannelAvailable(f"Channel {name!r} no longer exists.")
        return found

    async def channels(self) -> list[Channel]:
        """Every channel, enabled or not (the engine trusts their origins for image downloads)."""
        await self._snapshot()
        return list(self._by_name.values())

    async def models(self) -> list[tuple[str, str]]:
        """(model, provider of its first channel) for every model that can be served."""
        routes = await self._snapshot()
        return sorted((m, r.channels[0].provider) for m, r in routes.items())

    async def _changed(self) -> None:
        """Forget here at once; `announce` (services.invalidation) tells the other processes."""
        self.forget()
        if self.announce is not None:
            await self.announce("channels")

    def forget(self) -> None:
        self._expires = 0.0

    async def _snapshot(self) -> dict[str, Route]:
        if time.monotonic() < self._expires:
            return self._routes
        async with self._reloading:  # one reload at a time: the others wait for its result
            if time.monotonic() < self._expires:
                return self._routes
            return await self._reload()

    async def _reload(self) -> dict[str, Route]:
        rows = await read_rows(self._sessions, select(ChannelRow), scalars=True)
        channels: dict[str, list[Channel]] = {}
        caps: dict[str, Capabilities] = {}
        disabled: set[str] = set()
        by_name: dict[str, Channel] = {}
        for row in sorted(rows, key=lambda r: -r.priority):  # the best channel's view of a model wins
            provider = REGISTRY.get(row.provider)
            if provider is None:
                continue
            channel = by_name[row.name] = Channel(name=row.name, provider=row.provider, base_url=row.base_url,
                              api_key=row.api_key or (os.environ.get(row.api_key_env) if row.api_key_env else None),
                              models=tuple(row.models), model_map=dict(row.model_map or {}),
                              priority=row.priority, weight=row.weight, timeout=row.timeout_seconds,
                              options=dict(row.options or {}))
            if not row.enabled:
                disabled.update(row.models)
                continue
            for model in _with_successors(row.models, provider):
                # The channel's own vendor knows the model best; a renamed model behaves as the
                # upstream model it maps to; a model another vendor defines behaves as defined there.
                upstream = channel.upstream_model(model)
                known = KNOWN_MODELS.get(model) or KNOWN_MODELS.get(upstream)
                model_caps = (provider.models.get(model) or provider.models.get(upstream)
                              or (known[1] if known else provider.generic))
                if model_caps is None:
                    continue
                caps.setdefault(model, model_caps)
                channels.setdefault(model, []).append(channel)
        self._routes = {m: Route(m, caps[m], tuple(chs)) for m, chs in channels.items()}
        self._has_disabled = disabled - set(self._routes)
        self._by_name = by_name
        self._expires = time.monotonic() + self._cache_seconds
        return self._routes

    # -- management (admin API, CLI, start-up sync) --

    async def reconcile(self, configured: list[ChannelConfig], sandbox: bool, prune: bool = False,
                        dry_run: bool = False) -> "Reconciled":
        """Bring the configuration's channels into the database, and say what that did. Adds and
        updates what the configuration declares; never touches a channel made at run time (admin
        API, console, CLI). A configured channel the configuration no longer declares is only
        reported, and removed with `prune`; a built-in one (sandbox, simulated-*) whose switch is
        off is disabled, as it cannot serve (a simulated channel reaches nothing without
        simulate_vendors), and removed with `prune`. `dry_run`: say it, write nothing."""
        wanted = {c.name: c for c in configured}
        if sandbox and SANDBOX_CHANNEL not in wanted:
            wanted[SANDBOX_CHANNEL] = ChannelConfig(name=SANDBOX_CHANNEL, provider="sandbox",
                                                    models=list(Sandbox.models), priority=-100)
        done = Reconciled()
        async with self._sessions() as session:
            transaction = await session.begin()
            rows = {r.name: r for r in (await session.execute(select(ChannelRow))).scalars()}
            for name, cfg in wanted.items():
                row = rows.get(name)
                if row is not None and row.source != "config":
                    done.kept.append(name)  # made or changed at run time: it wins over the file
                    continue
                differs = [f for f in EDITABLE if row is None or getattr(row, f) != getattr(cfg, f)]
                if row is None:
                    row = ChannelRow(name=name, source="config")
                    session.add(row)
                    done.added.append(name)
                elif differs:
                    done.changed.append((name, differs))
                for attr in differs:
                    setattr(row, attr, getattr(cfg, attr))
            for name, row in sorted(rows.items()):
                if row.source != "config" or name in wanted:
                    continue
                if prune:
                    await session.delete(row)
                    done.removed.append(name)
                elif built_in(name):
                    if row.enabled:
                        row.enabled = False
                        done.disabled.append(name)
                else:
                    done.stale.append(name)
            await (transaction.rollback() if dry_run else transaction.commit())
        if done.writes and not dry_run:
            await self._changed()
        return done

    async def list(self) -> list[ChannelRow]:
        async with self._sessions() as session:
            return list((await session.execute(select(ChannelRow).order_by(ChannelRow.name))).scalars())

    async def get(self, name: str) -> ChannelRow:
        async with self._sessions() as session:
            row = (await session.execute(select(ChannelRow).where(ChannelRow.name == name))).scalar_one_or_none()
        if row is None:
            raise NotFound(f"No channel named '{name}'.", field="name")
        return row

    async def create(self, cfg: ChannelConfig) -> ChannelRow:
        async with self._sessions() as session, session.begin():
            exists = (await session.execute(select(ChannelRow.id).where(ChannelRow.name == cfg.name))).first()
            if exists:
                raise InvalidRequest(f"A channel named '{cfg.name}' already exists.", field="name",
                                     code="already_exists")
            row = ChannelRow(name=cfg.name, source="admin", **{f: getattr(cfg, f) for f in EDITABLE})
            session.add(row)
        await self._changed()
        return row

    async def update(self, name: str, changes: dict) -> ChannelRow:
        current = await self.get(name)
        merged = {**{f: getattr(current, f) for f in EDITABLE}, **changes, "name": name}
        if "api_key" in changes and changes["api_key"]:
            merged["api_key_env"] = None
        if changes.get("api_key_env"):
            merged["api_key"] = None
        cfg = ChannelConfig.model_validate(merged)  # the same rules as the config file
        async with self._sessions() as session, session.begin():
            row = (await session.execute(select(ChannelRow).where(ChannelRow.name == name))).scalar_one()
            for column in EDITABLE:
                setattr(row, column, getattr(cfg, column))
            row.source = "admin"
        await self._changed()
        return row

    async def delete(self, name: str) -> None:
        async with self._sessions() as session, session.begin():
            result = await session.execute(delete(ChannelRow).where(ChannelRow.name == name))
        if result.rowcount == 0:
            raise NotFound(f"No channel named '{name}'.", field="name")
        await self._changed()



def channel_warnings(cfg: ChannelConfig, unpriced_refused: bool, prices: dict) -> list[str]:
    """What will stop a new channel from serving: no key where its vendor needs one, models the
    gateway will refuse as unpriced (`prices`: Billing.table()). Said when it is added, not at
    the first request."""
    warnings = []
    if REGISTRY[cfg.provider].key_required and not (cfg.api_key or cfg.api_key_env):
        warnings.append(f"channel {cfg.name!r} has no API key: its vendor will refuse every call")
    unpriced = [m for m in cfg.models if m not in prices]
    if unpriced_refused and unpriced:
        warnings.append(f"no price for {', '.join(unpriced)}: requests for them are refused until one is set "
                        "(/admin/prices, the console, or unpriced = \"free\")")
    for model in cfg.models:
        owner = KNOWN_MODELS.get(cfg.model_map.get(model, model), (cfg.provider,))[0]
        if owner != cfg.provider and owner in OWN_APIS and model not in REGISTRY[cfg.provider].models:
            warnings.append(f"{model} belongs to {owner}: this {cfg.provider} channel serves it through the OpenAI, "
                            f"predictions and Replicate APIs only; {OWN_APIS[owner]} reaches {owner} channels "
                            "(simulate_vendors = true adds one that works offline)")
    return warnings


# The vendors' own APIs (surfaces/ideogram.py, surfaces/midjourney.py) reach only their vendor's
# channels: their buttons, describe and image seeds exist nowhere else.
OWN_APIS = {"ideogram": "the Ideogram API (/ideogram)", "midjourney": "the Midjourney API (/mj)"}

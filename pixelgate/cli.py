"""The command line: `pixelgate serve`, `pixelgate migrate`, `pixelgate keys ...`,
`pixelgate channels ...`. Management commands work on the same database as the server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import click

from pixelgate import __version__
from pixelgate.config import ChannelConfig, ConfigError, Settings, load_settings, unknown_variables


def _settings(ctx: click.Context) -> Settings:
    try:
        settings = load_settings(ctx.find_root().obj.get("config"))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for warning in unknown_variables(os.environ):
        click.echo(f"pixelgate: warning: {warning}", err=True)
    return settings


def _existing_database(settings: Settings) -> Settings:
    """Management commands work on the gateway's database: an SQLite file that is not there means
    this is not where the gateway keeps its data, and a new empty one would only mislead."""
    url = settings.resolved_database_url
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        raise click.ClickException(
            f"no gateway database at {url.split('///', 1)[-1]}: run this where `pixelgate serve` runs, or "
            "point PIXELGATE_DATA_DIR, PIXELGATE_DATABASE_URL or --config at the gateway's; "
            "`pixelgate migrate` creates a new one")
    click.echo(f"pixelgate: database {_display(url)}", err=True)
    return settings


def _display(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _run(settings: Settings, work: Callable[[Any], Awaitable[Any]], create: bool = False) -> Any:
    """Run `work(services-like namespace)` against the database, after migrating it. Unless
    `create`, the database must already be the gateway's (have its tables)."""
    from pixelgate.bootstrap import bootstrap
    from pixelgate.db.session import make_engine, sessionmaker
    from pixelgate.services.auth import KeyStore
    from pixelgate.services.invalidation import Invalidation
    from pixelgate.services.routing import ChannelDirectory

    async def main() -> Any:
        db = make_engine(settings.resolved_database_url)
        # a running fleet hears of the CLI's changes at once (with Redis; else in cache_seconds)
        invalidation = Invalidation(settings.redis_url, settings.redis_namespace)
        try:
            if not create and not await _has_tables(db):
                raise click.ClickException(
                    f"the database {_display(settings.resolved_database_url)} has no pixelgate tables: point "
                    "PIXELGATE_DATABASE_URL or --config at the gateway's; `pixelgate migrate` creates them")
            generated = await bootstrap(settings, db)
            if generated:
                click.echo(f"pixelgate: created admin key (shown once, keep it): {generated}", err=True)
            sessions = sessionmaker(db)
            keys, directory = KeyStore(sessions), ChannelDirectory(sessions)
            keys.announce = directory.announce = invalidation.changed
            ns = type("CLIContext", (), {"keys": keys, "directory": directory, "sessions": sessions})()
            return await work(ns)
        finally:
            await invalidation.close()
            await db.dispose()

    try:
        return asyncio.run(main())
    except click.ClickException:
        raise
    except Exception as exc:
        from pixelgate.errors import GatewayError
        from pixelgate.services.sealing import SealingError

        if isinstance(exc, GatewayError):
            raise click.ClickException(exc.message) from None
        if isinstance(exc, SealingError):
            raise click.ClickException(str(exc)) from None
        raise click.ClickException(database_problem(exc, settings.resolved_database_url) or repr(exc)) from None


async def _has_tables(db) -> bool:
    from sqlalchemy import inspect

    async with db.connect() as conn:
        return await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version"))


async def channel_warnings(cfg: ChannelConfig, settings: Settings, sessions) -> list[str]:
    from pixelgate.domain.prices import Price
    from pixelgate.services.billing import Billing
    from pixelgate.services.routing import channel_warnings as warnings

    configured = [Price(p.model, p.amount, p.currency or settings.currency) for p in settings.prices]
    billing = Billing(sessions, settings.currency, settings.exchange_rates, settings.unpriced, configured, 0)
    return warnings(cfg, settings.unpriced == "refuse", await billing.table())


def database_problem(exc: BaseException, url: str) -> str | None:
    """One line for a database that cannot be used (a malformed URL, a server that does not
    answer or refuses us), instead of a driver's traceback; None for anything else."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, InvalidRequestError, NoSuchModuleError

    where = _display(url)
    example = "postgresql+asyncpg://user@host:5432/db, or sqlite+aiosqlite:////path/to/pixelgate.db"
    # The gateway is asynchronous: a URL naming no driver, or a synchronous one (postgresql://
    # means psycopg2, sqlite:// the blocking sqlite3), fails in the import machinery.
    if isinstance(exc, (NoSuchModuleError, ModuleNotFoundError)) or (
            isinstance(exc, InvalidRequestError) and "async" in str(exc)):
        return f"the database URL {where!r} names no driver pixelgate has: write {example}"
    if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
        option = str(exc).rsplit(" ", 1)[-1]
        return (f"the database URL {where!r} has an option the driver does not take: {option} "
                "(asyncpg takes ?ssl=require where libpq takes sslmode)")
    if isinstance(exc, ArgumentError) or (isinstance(exc, ValueError) and "://" in str(exc) + url):
        return f"the database URL {where!r} is not valid: {str(exc).splitlines()[0]} (e.g. {example})"
    if isinstance(exc, (OSError, DBAPIError, ConnectionError)) or type(exc).__module__.startswith("asyncpg"):
        return f"cannot use the database {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def _echo(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _config_option(command):
    """--config works before or after the subcommand (`pixelgate --config f serve`, `pixelgate serve --config f`,
    `pixelgate keys list --config f`): every command finds the database the way `serve` does."""
    def remember(ctx: click.Context, _param, value: str | None) -> str | None:
        if value is not None:
            ctx.ensure_object(dict)
            root = ctx.find_root()
            root.ensure_object(dict)
            root.obj["config"] = value
        return value

    return click.option("--config", "config", type=click.Path(dir_okay=False), expose_value=False,
                        callback=remember, is_eager=True,
                        help="TOML or YAML config file (or PIXELGATE_CONFIG).")(command)


@click.group()
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="PIXELGATE_CONFIG",
              help="TOML or YAML config file (or PIXELGATE_CONFIG).")
@click.version_option(__version__, "--version", prog_name="pixelgate")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """pixelgate: one gateway in front of many image-generation models."""
    ctx.ensure_object(dict)
    ctx.obj.setdefault("config", config)


@main.command()
@_config_option
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8080).")
@click.option("--workers", type=int, default=None, help="Worker processes sharing the port.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Start the gateway."""
    from pixelgate.workers import serve as run_workers
    from pixelgate.bootstrap import bootstrap
    from pixelgate.db.session import make_engine
    from pixelgate.services.metrics import prepare_shared_directory

    overrides = {"host": host, "port": port, "workers": workers}
    for name, value in overrides.items():
        if value is not None:  # workers re-read settings from the environment
            os.environ[f"PIXELGATE_{name.upper()}"] = str(value)
    if ctx.obj.get("config"):
        os.environ["PIXELGATE_CONFIG"] = os.path.abspath(ctx.obj["config"])
    settings = _settings(ctx)

    async def prepare() -> tuple[str | None, bool, list[str]]:
        """The new admin key, if one was made, whether any vendor channel is enabled, and what
        will stop the config file's channels from serving (said at start, not at a first request)."""
        from pixelgate.db.session import sessionmaker
        from pixelgate.services.routing import ChannelDirectory
        from pixelgate.services.storage import open_storage

        store = await open_storage(settings.model_copy(update={"image_retention_days": None}))
        await store.aclose()  # a wrong bucket or endpoint stops here, in one line
        db = make_engine(settings.resolved_database_url)
        try:
            generated = await bootstrap(settings, db)
            channels = await ChannelDirectory(sessionmaker(db)).list()
            warnings = [w if w.startswith("channel ") else f"channel {cfg.name!r}: {w}" for cfg in settings.channels
                        for w in await channel_warnings(cfg, settings, sessionmaker(db))]
            return generated, any(c.enabled and c.provider != "sandbox" for c in channels), warnings
        finally:
            await db.dispose()

    from pixelgate.services.s3storage import StorageUnavailable
    from pixelgate.services.sealing import SealingError

    try:
        generated, vendors, warnings = asyncio.run(prepare())
    except (StorageUnavailable, SealingError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        problem = database_problem(exc, settings.resolved_database_url)
        if problem is None:
            raise
        raise click.ClickException(problem) from None
    if generated:
        click.echo(f"pixelgate: created admin key (shown once, keep it): {generated}")
    for warning in warnings:
        click.echo(f"pixelgate: warning: {warning}", err=True)
    os.environ["PIXELGATE_MIGRATE_ON_START"] = "false"  # done once here, not per worker
    if settings.workers > 1:  # the workers count into files of one directory (see metrics.py)
        prepare_shared_directory(settings.data_dir.resolve() / "metrics")
    if settings.simulate_vendors and settings.workers > 1:
        click.echo("pixelgate: warning: simulate_vendors keeps a simulated vendor's jobs in the memory of the "
                   "worker that made them: asynchronous models may fail with more than one worker", err=True)

    def bound(port: int) -> None:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        click.echo(f"pixelgate: listening on http://{host}:{port} "
                   f"({settings.workers} worker{'s' if settings.workers > 1 else ''}), "
                   f"database {_display(settings.resolved_database_url)}, "
                   f"images in {settings.storage_url or settings.resolved_storage_dir}")
        if not vendors and not settings.sandbox:
            click.echo("pixelgate: warning: no channel is enabled, so no model answers: add one (pixelgate "
                       "channels add, or the config file); sandbox = true (PIXELGATE_SANDBOX=true) serves the "
                       "offline sandbox-* models", err=True)
        elif not vendors:  # a new install: say how to reach more than the sandbox-* models
            click.echo("pixelgate: no vendor channel yet, so only the sandbox-* models answer: add one "
                       "(pixelgate channels add, or the config file), or set PIXELGATE_SIMULATE_VENDORS=true "
                       "to try every vendor's models and APIs offline")

    try:
        run_workers(settings.host, settings.port, settings.workers, on_bound=bound, loop="uvloop",
                    http="httptools", log_level=settings.log_level, access_log=False, timeout_graceful_shutdown=30,
                    header_timeout=settings.header_timeout_seconds)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise click.ClickException(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}") from None


@main.command()
@_config_option
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade the database schema."""
    settings = _settings(ctx)
    click.echo(f"pixelgate: database {_display(settings.resolved_database_url)}", err=True)
    _run(settings, lambda ns: asyncio.sleep(0), create=True)
    click.echo("pixelgate: database is up to date")


@main.command()
@_config_option
@click.option("--by", "group_by", type=click.Choice(["key", "model", "channel", "day"]), default="model",
              show_default=True)
@click.option("--key", "key_id", type=int, help="Only this key's usage.")
@click.option("--days", type=int, default=30, show_default=True)
@click.pass_context
def usage(ctx: click.Context, group_by: str, key_id: int | None, days: int) -> None:
    """Spend and images by key, model, channel or day."""
    from pixelgate.services.usage import usage as report

    settings = _settings(ctx)

    async def work(ns):
        return await report(ns.sessions, group_by, key_id, days)

    data = _run(_existing_database(settings), work)
    click.echo(f"{group_by:<32} {'requests':>9} {'images':>7} {'cost (' + settings.currency + ')':>16}")
    for row in data["data"]:
        click.echo(f"{str(row[group_by]):<32} {row['requests']:>9} {row['images']:>7} {format(row['cost'].normalize(), 'f'):>16}")
    click.echo(f"{'total':<32} {'':>9} {data['total_images']:>7} {format(data['total_cost'].normalize(), 'f'):>16}")


# ---- keys ----

@main.group()
def keys() -> None:
    """Manage client API keys."""


@keys.command("create")
@_config_option
@click.option("--name", required=True)
@click.option("--expires", help="ISO date or datetime (UTC) after which the key stops working.")
@click.option("--models", help="Comma-separated allowlist of models (default: all).")
@click.option("--admin", is_flag=True, help="An admin key (may use /admin/).")
@click.pass_context
def keys_create(ctx: click.Context, name: str, expires: str | None, models: str | None, admin: bool) -> None:
    """Create a key and print it (the only time it is shown)."""
    expires_at = None
    if expires:
        try:
            expires_at = datetime.fromisoformat(expires)
        except ValueError:
            raise click.BadParameter(f"not an ISO date: {expires}", param_hint="--expires") from None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None

    async def work(ns):
        row, token = await ns.keys.create(name, is_admin=admin, expires_at=expires_at, allowed_models=allowed)
        return row, token

    row, token = _run(_existing_database(_settings(ctx)), work)
    click.echo(f"id {row.id}, name {row.name!r}: {token}")
    click.echo("Keep it now: only its hash is stored.", err=True)


@keys.command("list")
@_config_option
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    from pixelgate.services.auth import key_view

    _echo([key_view(k) for k in _run(_existing_database(_settings(ctx)), lambda ns: ns.keys.list())])


def _key_setter(command: str, **fields: Any):
    @keys.command(command)
    @_config_option
    @click.argument("key_id", type=int)
    @click.pass_context
    def run(ctx: click.Context, key_id: int) -> None:
        _run(_existing_database(_settings(ctx)), lambda ns: ns.keys.update(key_id, **fields))
        click.echo(f"key {key_id}: {command}d")

    run.__doc__ = f"{command.capitalize()} a key."
    return run


_key_setter("enable", enabled=True)
_key_setter("disable", enabled=False)


@keys.command("delete")
@_config_option
@click.argument("key_id", type=int)
@click.pass_context
def keys_delete(ctx: click.Context, key_id: int) -> None:
    """Delete a key."""
    _run(_existing_database(_settings(ctx)), lambda ns: ns.keys.delete(key_id))
    click.echo(f"key {key_id}: deleted")


# ---- channels ----

@main.group()
def channels() -> None:
    """Manage upstream channels."""


@channels.command("list")
@_config_option
@click.pass_context
def channels_list(ctx: click.Context) -> None:
    from pixelgate.services.routing import channel_view

    _echo([channel_view(c) for c in _run(_existing_database(_settings(ctx)), lambda ns: ns.directory.list())])


@channels.command("add")
@_config_option
@click.option("--name", required=True)
@click.option("--provider", required=True)
@click.option("--base-url")
@click.option("--api-key", help="The upstream key (stored; never shown again).")
@click.option("--api-key-env", help="Read the upstream key from this environment variable.")
@click.option("--models", required=True, help="Comma-separated models it serves.")
@click.option("--map", "mapping", multiple=True, help="public=upstream model name; repeatable.")
@click.option("--priority", type=int, default=0)
@click.option("--weight", type=int, default=1)
@click.option("--timeout", type=float)
@click.option("--disabled", is_flag=True)
@click.pass_context
def channels_add(ctx: click.Context, name: str, provider: str, base_url: str | None, api_key: str | None,
                 api_key_env: str | None, models: str, mapping: tuple[str, ...], priority: int,
                 weight: int, timeout: float | None, disabled: bool) -> None:
    """Add a channel."""
    try:
        cfg = ChannelConfig(name=name, provider=provider, base_url=base_url, api_key=api_key,
                            api_key_env=api_key_env, models=[m.strip() for m in models.split(",") if m.strip()],
                            model_map=dict(m.split("=", 1) for m in mapping), priority=priority,
                            weight=weight, enabled=not disabled, timeout_seconds=timeout)
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    settings = _existing_database(_settings(ctx))

    async def work(ns):
        await ns.directory.create(cfg)
        return await channel_warnings(cfg, settings, ns.sessions)

    for warning in _run(settings, work):
        click.echo(f"pixelgate: warning: {warning}", err=True)
    click.echo(f"channel {name}: added")


def _channel_setter(command: str, enabled: bool):
    @channels.command(command)
    @_config_option
    @click.argument("name")
    @click.pass_context
    def run(ctx: click.Context, name: str) -> None:
        _run(_existing_database(_settings(ctx)), lambda ns: ns.directory.update(name, {"enabled": enabled}))
        click.echo(f"channel {name}: {command}d")

    run.__doc__ = f"{command.capitalize()} a channel."
    return run


_channel_setter("enable", True)
_channel_setter("disable", False)


@channels.command("remove")
@_config_option
@click.argument("name")
@click.pass_context
def channels_remove(ctx: click.Context, name: str) -> None:
    """Remove a channel."""
    _run(_existing_database(_settings(ctx)), lambda ns: ns.directory.delete(name))
    click.echo(f"channel {name}: removed")


@main.command()
@click.option("--write-readme", "readme", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Rewrite the model and price tables of this README instead of printing them.")
def catalog(readme: str | None) -> None:
    """The model catalog: lifecycle and prices, as the README shows them."""
    from pathlib import Path

    from pixelgate.catalog_docs import models_table, prices_table, render_readme

    if readme is None:
        click.echo(models_table() + "\n\n" + prices_table())
        return
    path = Path(readme)
    text = path.read_text()
    updated = render_readme(text)
    if updated != text:
        path.write_text(updated)
    click.echo(f"pixelgate: {'rewrote' if updated != text else 'checked'} the catalog tables of {readme}")


@main.group()
def secrets() -> None:
    """The secrets the database holds sealed (channel keys, webhook secrets, the URL-signing secret)."""


@secrets.command("rotate")
@_config_option
@click.pass_context
def secrets_rotate(ctx: click.Context) -> None:
    """Reseal every secret under encryption_key; the old key must be in encryption_keys_previous
    until this has run (on one instance: the others open both while it runs)."""
    from pixelgate.services import sealing

    settings = _settings(ctx)

    async def work(ns) -> int:
        return await sealing.reseal(ns.sessions, everything=True)

    changed = _run(settings, work)
    click.echo(f"pixelgate: resealed {changed} secret(s) under key {sealing.KEYRING.primary}; "
               "encryption_keys_previous can now be emptied")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

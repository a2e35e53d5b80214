"""The command line: `pixelgate serve`, `pixelgate migrate`, `pixelgate config apply`, `pixelgate
keys|channels|accounts ...`. Management commands work on the same database as the server, and
change only what they name (the configuration's channels: `serve` and `config apply`)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
from pathlib import Path
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Awaitable, Callable

import click

from pixelgate import __version__
from pixelgate.config import ChannelConfig, ConfigError, Settings, load_settings, unknown_variables
from pixelgate.providers import REGISTRY


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
    `create`, the database must already be the gateway's (have its tables). Nothing else is
    written: a command changes only what it names."""
    from pixelgate.bootstrap import prepare_database
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
            await prepare_database(settings, db)
            sessions = sessionmaker(db)
            keys, directory = KeyStore(sessions), ChannelDirectory(sessions)
            keys.announce = directory.announce = invalidation.changed
            ns = type("CLIContext", (), {"keys": keys, "directory": directory, "sessions": sessions,
                                         "billing": _billing(settings, sessions)})()
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


def _billing(settings: Settings, sessions):
    from pixelgate.domain.prices import Price
    from pixelgate.services.billing import Billing

    configured = [Price(p.model, p.amount, p.currency or settings.currency) for p in settings.prices]
    return Billing(sessions, settings.currency, settings.exchange_rates, settings.unpriced, configured, 0)


async def channel_warnings(cfg: ChannelConfig, settings: Settings, sessions) -> list[str]:
    from pixelgate.services.routing import channel_warnings as warnings

    return warnings(cfg, settings.unpriced == "refuse", await _billing(settings, sessions).table())


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
    click.echo(json.dumps(data, indent=2, default=_plain))


def _plain(value: Any) -> str:
    """Money exact and as the admin API writes it ("15.5"), times in ISO 8601."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value.isoformat() if isinstance(value, datetime) else str(value)


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
    """Start the gateway. Everything that can be checked is checked before anything is written:
    the configuration, the port, the image storage, the database. Then the configuration's
    channels are brought into the database (as `pixelgate config apply` does, without --prune)."""
    from pixelgate.workers import check_port, serve as run_workers
    from pixelgate.bootstrap import channel_report, start
    from pixelgate.db.session import make_engine
    from pixelgate.services.metrics import prepare_shared_directory

    overrides = {"host": host, "port": port, "workers": workers}
    for name, value in overrides.items():
        if value is not None:  # workers re-read settings from the environment
            os.environ[f"PIXELGATE_{name.upper()}"] = str(value)
    if ctx.obj.get("config"):
        os.environ["PIXELGATE_CONFIG"] = os.path.abspath(ctx.obj["config"])
    settings = _settings(ctx)
    try:
        check_port(settings.host, settings.port)
    except OSError as exc:
        raise _cannot_listen(settings, exc) from None

    async def prepare() -> tuple[Any, bool, list[str]]:
        """What start() did, whether any vendor channel is enabled, and what will stop the config
        file's channels from serving (said at start, not at a first request)."""
        from pixelgate.db.session import sessionmaker
        from pixelgate.services.routing import ChannelDirectory
        from pixelgate.services.storage import open_storage

        outage: list[str] = []
        store = await open_storage(settings.model_copy(update={"image_retention_days": None}), outage.append)
        await store.aclose()  # a wrong bucket or endpoint stops here, in one line
        db = make_engine(settings.resolved_database_url)
        try:
            started = await start(settings, db)
            channels = await ChannelDirectory(sessionmaker(db)).list()
            warnings = [w if w.startswith("channel ") else f"channel {cfg.name!r}: {w}" for cfg in settings.channels
                        for w in await channel_warnings(cfg, settings, sessionmaker(db))]
            return started, any(c.enabled and c.provider != "sandbox" for c in channels), outage + warnings
        finally:
            await db.dispose()

    from pixelgate.errors import StorageUnavailable  # not s3storage's: obstore is 4 MB a local-disk gateway need not hold
    from pixelgate.services.sealing import SealingError

    try:
        started, vendors, warnings = asyncio.run(prepare())
    except (StorageUnavailable, SealingError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        problem = database_problem(exc, settings.resolved_database_url)
        if problem is None:
            raise
        raise click.ClickException(problem) from None
    if started.admin_key:
        click.echo(f"pixelgate: created admin key (shown once, keep it): {started.admin_key}")
    for line in channel_report(started.channels, settings):
        click.echo(f"pixelgate: {line}", err=True)
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
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise  # not the address: a file missing from an install, say (shown as it is)
        raise _cannot_listen(settings, exc) from None  # taken since check_port


def _cannot_listen(settings: Settings, exc: OSError) -> click.ClickException:
    """The port is taken, or the address is not this machine's."""
    return click.ClickException(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}")


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
        names = {str(k.id): f"{k.name} (id {k.id})" for k in await ns.keys.list()} if group_by == "key" else {}
        return await report(ns.sessions, group_by, key_id, days), names

    data, names = _run(_existing_database(settings), work)
    click.echo(f"{group_by:<32} {'requests':>9} {'images':>7} {'cost (' + settings.currency + ')':>16}")
    for row in data["data"]:
        label = names.get(row[group_by], f"deleted key (id {row[group_by]})") if names else row[group_by]
        click.echo(f"{label:<32} {row['requests']:>9} {row['images']:>7} {format(row['cost'].normalize(), 'f'):>16}")
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
@click.option("--account", "account_id", type=int, help="The account (pixelgate accounts create) it spends from.")
@click.option("--rpm", "rate_limit_rpm", type=int, help="Most requests a minute.")
@click.option("--max-concurrent", type=int, help="Most requests at once.")
@click.option("--group", help="Its group (group_markups prices it).")
@click.pass_context
def keys_create(ctx: click.Context, name: str, expires: str | None, models: str | None, admin: bool,
                **limits: Any) -> None:
    """Create a key and print it (the only time it is shown)."""
    from pixelgate.surfaces.admin import KeyCreate

    expires_at = None
    if expires:
        try:
            expires_at = datetime.fromisoformat(expires)
        except ValueError:
            raise click.BadParameter(f"not an ISO date: {expires}", param_hint="--expires") from None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    body = _validated(KeyCreate, {"name": name, "expires_at": expires_at, "allowed_models": allowed,
                                  "is_admin": admin, **limits})

    async def work(ns):
        if body.account_id is not None:
            await ns.billing.account(body.account_id)  # as the admin API: the account must exist
        return await ns.keys.create(**body.model_dump())

    row, token = _run(_existing_database(_settings(ctx)), work)
    click.echo(f"id {row.id}, name {row.name!r}: {token}")
    click.echo("Keep it now: only its hash is stored.", err=True)


OPTIONS = {"account_id": "--account", "rate_limit_rpm": "--rpm", "max_concurrent": "--max-concurrent",
           "spend_limit": "--spend-limit", "allowed_models": "--models", "expires_at": "--expires",
           "amount": "AMOUNT"}
"""The option that sets a field of the admin API's bodies, where their names differ."""


def _validated(model: Any, data: dict) -> Any:
    """`data` checked by the admin API's own body model; a refusal names the option."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise click.BadParameter(err["msg"], param_hint=OPTIONS.get(field, f"--{field.replace('_', '-')}")) from None


@keys.command("list")
@_config_option
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Every key (never its secret), as JSON."""
    from pixelgate.services.auth import key_view

    _echo([key_view(k) for k in _run(_existing_database(_settings(ctx)), lambda ns: ns.keys.list())])


def _key_setter(command: str, **fields: Any):
    @keys.command(command, help=f"{command.capitalize()} a key.")
    @_config_option
    @click.argument("key_id", type=int)
    @click.pass_context
    def run(ctx: click.Context, key_id: int) -> None:
        _run(_existing_database(_settings(ctx)), lambda ns: ns.keys.update(key_id, **fields))
        click.echo(f"key {key_id}: {command}d")

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
    """Every channel (never its upstream key), as JSON; `source` says whether the configuration
    declares it (config) or it was made at run time (admin)."""
    from pixelgate.services.routing import channel_view

    _echo([channel_view(c) for c in _run(_existing_database(_settings(ctx)), lambda ns: ns.directory.list())])


@channels.command("add")
@_config_option
@click.option("--name", required=True)
@click.option("--provider", required=True, type=click.Choice(sorted(REGISTRY)))
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
    @channels.command(command, help=f"{command.capitalize()} a channel.")
    @_config_option
    @click.argument("name")
    @click.pass_context
    def run(ctx: click.Context, name: str) -> None:
        _run(_existing_database(_settings(ctx)), lambda ns: ns.directory.update(name, {"enabled": enabled}))
        click.echo(f"channel {name}: {command}d")

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


# ---- config ----

@main.group("config")
def config_group() -> None:
    """The configuration's channels (config file, sandbox, simulate_vendors) in the database."""


@config_group.command("apply")
@_config_option
@click.option("--prune", is_flag=True, help="Also remove the channels the configuration no longer declares.")
@click.option("--dry-run", is_flag=True, help="Say what would change, and change nothing.")
@click.pass_context
def config_apply(ctx: click.Context, prune: bool, dry_run: bool) -> None:
    """Add and update the channels the configuration declares, and say what changed. What it no
    longer declares is reported, and removed only with --prune; channels made with the admin
    API, the console or the CLI are never touched. `serve` does the same, without --prune."""
    from pixelgate.bootstrap import apply_config, channel_report

    settings = _existing_database(_settings(ctx))
    done = _run(settings, lambda ns: apply_config(settings, ns.directory, prune, dry_run))
    for line in channel_report(done, settings, dry_run) or ["the database's channels match the configuration"]:
        click.echo(f"pixelgate: {line}")


# ---- accounts ----

@main.group()
def accounts() -> None:
    """Manage accounts: balances that keys spend from (as /admin/accounts)."""


ACCOUNT_ID = click.IntRange(1, 2**31 - 1)  # the id columns are 32-bit


@accounts.command("create")
@_config_option
@click.option("--name", required=True)
@click.option("--balance", help="Starting balance (default: none: only --spend-limit, if given, bounds spending).")
@click.option("--spend-limit", help="Most it may spend in all.")
@click.option("--markup", default="1", show_default=True, help="Multiplies every price it pays (1.2: +20%).")
@click.pass_context
def accounts_create(ctx: click.Context, **fields: Any) -> None:
    """Create an account and print it, with its id (for keys create --account)."""
    from pixelgate.surfaces.admin import AccountCreate

    body = _validated(AccountCreate, {k: v for k, v in fields.items() if v is not None})
    _account_command(ctx, lambda ns: ns.billing.create_account(body.name, body.balance, body.spend_limit,
                                                               body.markup))


@accounts.command("show")
@_config_option
@click.argument("account_id", type=ACCOUNT_ID)
@click.pass_context
def accounts_show(ctx: click.Context, account_id: int) -> None:
    """An account: balance, reserved, spent, available, spend limit and markup."""
    _account_command(ctx, lambda ns: ns.billing.account(account_id))


@accounts.command("topup")
@_config_option
@click.argument("account_id", type=ACCOUNT_ID)
@click.argument("amount")
@click.option("--reference", help="Applied once per reference (default: a new one).")
@click.pass_context
def accounts_topup(ctx: click.Context, account_id: int, amount: str, reference: str | None) -> None:
    """Add AMOUNT to the balance (a negative amount takes it away)."""
    from pixelgate.surfaces.admin import TopUp

    body = _validated(TopUp, {"amount": amount} | ({"reference": reference} if reference else {}))
    _account_command(ctx, lambda ns: ns.billing.top_up(account_id, body.amount, body.reference))


def _account_command(ctx: click.Context, work: Callable[[Any], Awaitable[Any]]) -> None:
    from pixelgate.surfaces.admin import account_view

    _echo(account_view(_run(_existing_database(_settings(ctx)), work)))


@accounts.command("ledger")
@_config_option
@click.argument("account_id", type=ACCOUNT_ID)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.pass_context
def accounts_ledger(ctx: click.Context, account_id: int, limit: int) -> None:
    """The account's money movements, newest first: topups, holds and settlements."""
    from pixelgate.console.data import ledger

    async def work(ns):
        await ns.billing.account(account_id)  # an unknown id is said, not an empty list
        return await ledger(ns.sessions, account_id, limit)

    _echo([{"id": e.id, "kind": e.kind, "amount": e.amount, "request_id": e.request_id, "unit_price": e.unit_price,
            "created_at": e.created_at} for e in _run(_existing_database(_settings(ctx)), work)])


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
    from pixelgate.db import sealed
    from pixelgate.services import sealing

    settings = _settings(ctx)

    async def work(ns) -> int:
        return await sealing.reseal(ns.sessions, everything=True)

    changed = _run(settings, work)
    click.echo(f"pixelgate: resealed {changed} secret(s) under key {sealed.KEYRING.primary}; "
               "encryption_keys_previous can now be emptied")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

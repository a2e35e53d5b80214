"""Settings: one typed object, read once at start-up and passed down.

Sources, strongest first: explicit overrides (CLI flags), environment variables
(PIXELGATE_*, nested with "__"), then the config file (TOML or YAML) named by --config or
PIXELGATE_CONFIG. Everything has an embedded default, so no configuration at all gives a
working gateway: SQLite and images under ./data, the offline `sandbox` provider enabled.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict,
                               TomlConfigSettingsSource, YamlConfigSettingsSource)


from pixelgate.domain.catalog import PriceDimension, RetiredPolicy, TokenRates


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending field."""


class ChannelConfig(BaseModel):
    """One upstream: a provider type, where to reach it and which models it serves."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    provider: str
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    api_key_env: str | None = None
    models: list[str] = Field(min_length=1)
    model_map: dict[str, str] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-(2**31 - 1), le=2**31 - 1)  # an INTEGER column
    weight: int = Field(default=1, ge=1, le=1000)
    enabled: bool = True
    timeout_seconds: float | None = Field(default=None, gt=0, le=3600)
    options: dict[str, Any] = Field(default_factory=dict)
    """What only this channel's provider takes (Azure's deployments and api_version, Vertex's
    project and location, ...): checked by the provider's `channel_options` model."""

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        from pixelgate.providers import REGISTRY

        if value not in REGISTRY:
            raise ValueError(f"unknown provider {value!r}; known: {', '.join(sorted(REGISTRY))}")
        return value

    @model_validator(mode="after")
    def _key_source(self) -> "ChannelConfig":
        if self.api_key and self.api_key_env:
            raise ValueError("give api_key or api_key_env, not both")
        if self.api_key_env and self.api_key_env not in os.environ:
            raise ValueError(f"environment variable {self.api_key_env} (api_key_env) is not set")
        from pixelgate.providers import REGISTRY

        if REGISTRY[self.provider].needs_base_url and not self.base_url:
            raise ValueError(f"provider {self.provider!r} needs base_url")
        takes = REGISTRY[self.provider].channel_options
        if takes is None and self.options:
            raise ValueError(f"provider {self.provider!r} takes no options")
        if takes is not None:  # normalised, so the stored options are the checked ones
            self.options = takes.model_validate(self.options).model_dump(exclude_none=True)
        return self


class PriceConfig(BaseModel):
    """An operator's price: per delivered image, for a model, optionally one operation and
    dimensions (quality, size, tier, speed)."""

    model_config = {"extra": "forbid"}

    model: str = Field(min_length=1)
    amount: Decimal = Field(default=Decimal(0), ge=0)
    tokens: TokenRates | None = None
    """A token price (per million tokens), as GPT image and Gemini models bill; `amount` is then ignored."""
    currency: str | None = None
    operation: str = "*"
    dimensions: dict[PriceDimension, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PIXELGATE_", env_nested_delimiter="__",
                                      extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    log_level: str = "info"
    """The least severe lines logged: debug, info (a line per request), warning, error."""
    log_format: Literal["text", "json"] = "text"
    """`json`: every line one JSON object (access lines carry their fields as keys)."""
    metrics_token: str | None = Field(default=None, repr=False, min_length=16)
    """A bearer token that reads GET /metrics (and nothing else), for a Prometheus scraper that
    should not hold the admin key."""

    data_dir: Path = Path("./data")
    database_url: str | None = None
    storage_dir: Path | None = None
    image_retention_days: float | None = Field(default=None, gt=0)
    """Stored images older than this are deleted, a day's segment file at a time; their links
    then answer 404. Unset: kept for ever."""
    storage_url: str | None = Field(default=None, pattern=r"^s3://[^/]+(/.*)?$")
    """Where images are stored. Unset: segment files under storage_dir, on this machine.
    `s3://bucket/prefix`: an S3-compatible store, which several instances share. Credentials
    come from the standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)."""
    s3_endpoint_url: str | None = None
    """The store's endpoint for S3-compatible stores (MinIO, SeaweedFS, R2, OSS); unset: AWS."""
    s3_region: str | None = None
    """The bucket's region (default: AWS_REGION, else us-east-1)."""
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """Bucket in the path or in the host name; auto: path with an endpoint, virtual on AWS."""
    storage_timeout_seconds: float = Field(default=5, gt=0, le=600)
    """Longest wait for one answer of the S3 store (large images get a second more per 2 MB);
    past it the request is answered 503 storage_unavailable, and nothing is charged."""
    presigned_urls: bool = False
    """Image links still name the gateway (signed, expiring), but it answers them with a redirect
    to a presigned URL of the store, so the bytes do not pass through the gateway (S3 only)."""
    keep_images: Literal["linked", "all"] = "linked"
    """Which delivered images the gateway keeps a copy of. `linked`: those it must serve itself
    (URLs, tasks); an image answered in base64 is in the client's hands and passes through
    without touching the disk. `all`: base64 answers too (an archive, for audit or a gallery),
    at the pace of the disk: a 1.1 MB image per request needs ~1 GB/s at 900 requests/s."""
    public_base_url: str | None = None
    """Absolute base for image URLs; by default taken from the request's Host header."""

    url_ttl_seconds: int = Field(default=3600, ge=1)
    """How long a signed image URL stays valid."""
    secret_key: str | None = Field(default=None, repr=False)
    """Signs image URLs. By default one is generated and kept in the database, shared by every
    worker and instance that uses it."""
    admin_key: str | None = Field(default=None, repr=False)
    encryption_key: str | None = Field(default=None, repr=False)
    """Seals channel keys, webhook secrets and the URL-signing secret in the database (AES-256-GCM;
    base64 of 32 random bytes). Unset: `encryption_key_file`, else `data_dir/encryption.key`,
    made on first start. Every instance sharing a database needs the same key."""
    encryption_key_file: Path | None = None
    encryption_keys_previous: list[str] = Field(default_factory=list, repr=False)
    """Older keys, kept to open what they sealed while `pixelgate secrets rotate` reseals it."""

    sandbox: bool = True
    """Serve the built-in offline `sandbox` models through a channel named `sandbox`. Unset, on
    only for a gateway without a config file, a database server or S3 storage (a first try, `make
    run`): a production gateway serves them only when told `sandbox = true`."""
    simulate_vendors: bool = False
    """Add a channel per vendor (simulated-openai, simulated-bfl, ... simulated-midjourney) that
    reaches a simulator of that vendor's API inside the gateway, offline: every model and every
    API works without a vendor key. Models the built-in price table lacks cost 0 on them. For a
    first try, a demo or CI; keep one worker (a simulator's jobs live in its process)."""

    chat_markdown_images: bool = True
    """Chat completions also write each image into the message's `content` as a markdown image
    (`![image](url)`), for chat clients that show only `content`."""
    image_tool_model: str = "gpt-image-2"
    """The model that makes the images of the Responses API's `image_generation` tool when the
    tool names none and the request's own model is not an image model."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    """Channels tried for one request when the earlier ones failed without accepting work."""
    async_wait_seconds: float = Field(default=300, gt=0)
    """How long a synchronous API waits for an asynchronous model before answering 504."""
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    task_deadline_seconds: float = Field(default=3600, gt=0)
    """An asynchronous task still unfinished after this long fails (and is refunded)."""
    task_store_retry_seconds: float = Field(default=1800, gt=0)
    """How long a task whose images the vendor finished keeps trying to store them while the
    image store is unavailable (again and again, at doubling waits up to a minute; the vendor is
    not asked again and what it made stays on the task row), before the task fails, charged
    nothing. It is charged once, when its images are stored."""
    webhook_retry_seconds: float = Field(default=1.0, gt=0)
    """First wait before a failed webhook is sent again; it doubles with each try (9 tries)."""
    webhook_per_destination: int = Field(default=4, ge=1)
    """Webhooks in flight at once to one receiver (scheme, host and port), across the fleet: a
    receiver that stalls holds this many senders, not all of them. After a failure (no answer,
    5xx or 429) its origin is tried again one webhook at a time, after doubling waits."""
    task_lease_seconds: float = Field(default=30, gt=0)
    """A worker polling a task holds it this long; if the worker dies, another takes over after it."""
    cache_seconds: float = Field(default=2.0, ge=0)
    """How long keys and channels read from the database are trusted in one process."""
    upstream_connections: int = Field(default=16384, ge=1)
    """Per worker; at most half its open-file limit (see services/transport.pool_size)."""
    header_timeout_seconds: float = Field(default=10, gt=0, le=600)
    """A client must send a request's headers within this long of connecting (or of its last
    answer), or the connection is closed: idle and trickling sockets are not held."""
    auth_failures_per_minute: int = Field(default=30, ge=0)
    """Failed authentications (401s) one client address may cause in a minute; past it that
    address is answered 429 until the minute ends. 0: no limit. Counted in Redis with redis_url."""
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    fetch_allow_hosts: list[str] = Field(default_factory=list)
    """Hosts whose URLs (input images, webhooks) may be fetched even though they resolve to
    loopback or private addresses; everything else must be public."""
    upstream_image_hosts: list[str] = Field(default_factory=list)
    """Hosts (shell patterns: `*.cdn.example.com`) a vendor's image URL may point at, besides its
    channel's own origin and the delivery hosts its provider declares; each must still be public
    unless it is also in fetch_allow_hosts."""
    fetch_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    upstream_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    """Most bytes read from one vendor answer, stream or image download (base64 of large images
    is big, so generous); past it the request fails with 502 instead of filling memory."""
    fetch_timeout_seconds: float = Field(default=30, gt=0)
    migrate_on_start: bool = True

    channels: list[ChannelConfig] = Field(default_factory=list)

    currency: str = Field(default="USD", min_length=3, max_length=8)
    """The currency of balances and charges."""
    exchange_rates: dict[str, Decimal] = Field(default_factory=lambda: {"CNY": Decimal("0.14")})
    """Value of one unit of another currency in `currency`, for prices written in it (the built-in
    DALL-E and Midjourney prices are in CNY). The default CNY rate is approximate: set your own."""
    unpriced: Literal["refuse", "free"] = "refuse"
    """What happens to a request for a model with no price: refused (403) or served free."""
    prices: list[PriceConfig] = Field(default_factory=list)
    group_markups: dict[str, Decimal] = Field(default_factory=dict)
    """Key group -> markup: a key of the group pays every price times it (times its account's own
    markup). {"resellers": 1.3} adds 30% for keys created with group "resellers"."""
    retired_models: dict[str, RetiredPolicy] = Field(default_factory=dict)
    """What a request for a retired model gets (see GET /v1/models), per model ("*" for all):
    `successor` (the default): served by its successor, its parameters translated; `refuse`: a
    clear error naming the successor; `upstream`: sent to the model's channels as it is, for an
    upstream (another gateway) that still serves the name."""
    redis_url: str | None = None
    """Shared rate limits and concurrency slots across workers and instances, and the channel
    that tells every instance at once of a changed key, channel or price; in-process without it."""
    redis_namespace: str = Field(default="pixelgate", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
    """Prefix of every Redis key and channel the gateway uses: fleets sharing one Redis stay apart."""
    redis_timeout_seconds: float = Field(default=0.5, gt=0, le=60)
    """Longest wait for Redis to connect or answer. A Redis that fails is then left alone for 5 s
    (then tried with one call), and the gateway serves without it, as when Redis is down: rate
    limits step aside and changes reach other instances within cache_seconds."""
    slot_seconds: float = Field(default=60, gt=0, le=3600)
    """A request's concurrency slot expires this long after its last renewal (a running request
    renews it every third of this), so the slots of a killed instance free themselves."""

    @model_validator(mode="after")
    def _unique_channels(self) -> "Settings":
        names = [c.name for c in self.channels]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"channel names must be unique: {', '.join(sorted(dupes))}")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'pixelgate.db').resolve()}"

    @property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "images").resolve()


def unknown_variables(environ) -> list[str]:
    """PIXELGATE_* variables that name no setting (a typo is otherwise silently ignored)."""
    import difflib

    known = {f"PIXELGATE_{name.upper()}" for name in Settings.model_fields} | {"PIXELGATE_CONFIG",
                                                                              "PIXELGATE_TEST_PG", "PIXELGATE_TEST_REDIS"}
    found = []
    for name in sorted(environ):
        if name.startswith("PIXELGATE_") and name.split("__", 1)[0] not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            found.append(f"{name} is not a pixelgate setting" + (f"; did you mean {close[0]}?" if close else ""))
    return found


def load_settings(config_path: str | os.PathLike | None = None, **overrides: Any) -> Settings:
    """Build Settings from overrides, environment and the config file; ConfigError names the
    first bad field."""
    path = config_path or os.environ.get("PIXELGATE_CONFIG")
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                       init_settings: PydanticBaseSettingsSource,
                                       env_settings: PydanticBaseSettingsSource,
                                       dotenv_settings: PydanticBaseSettingsSource,
                                       file_secret_settings: PydanticBaseSettingsSource):
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                if str(path).endswith((".yaml", ".yml")):
                    sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
                else:
                    sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    try:
        settings = _FileSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except ValueError as exc:  # a malformed TOML/YAML file
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if "sandbox" not in settings.model_fields_set and (
            path is not None or settings.storage_url or not settings.resolved_database_url.startswith("sqlite")):
        settings.sandbox = False  # free fake models have no place in production unless asked for
    return settings


def _describe(exc: ValidationError, path: Any) -> str:
    where = f" in {path}" if path else ""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"invalid configuration{where}: {field}: {err['msg']}")
    return "\n".join(lines)

"""SQLAlchemy 2 mapped classes: the gateway's whole persistent state."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from sqlalchemy import (JSON, Boolean, DateTime, Float, Integer, Numeric, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pixelgate.db.sealed import Sealed


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    """A client key. Only its SHA-256 is kept; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    allowed_models: Mapped[list | None] = mapped_column(JSON, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(Sealed, nullable=True)
    """Signs this key's webhooks (Standard Webhooks, "whsec_" + base64); sealed at rest."""
    account_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    """The account whose balance the key spends; None: unlimited (costs are still recorded)."""
    rate_limit_rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The key's group: its prices are marked up by the group's markup (setting group_markups)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConsoleSession(Base):
    """A signed-in console session: its cookie holds a random id whose SHA-256 is the row's id.
    Signing out or disabling the key revokes it for every instance at once."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ChannelRow(Base):
    """An upstream. Declared in the config file (source="config", re-synced at start-up) or
    managed at run time through the admin API and CLI (source="admin")."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    api_key: Mapped[str | None] = mapped_column(Sealed, nullable=True)
    """Sealed at rest (db.sealed)."""
    api_key_env: Mapped[str | None] = mapped_column(String(128), nullable=True)
    models: Mapped[list] = mapped_column(JSON)
    model_map: Mapped[dict] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    timeout_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    options: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    """The provider's own settings (ChannelConfig.options); no secrets: those go in api_key."""
    source: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RequestLog(Base):
    """One row per client request, whatever its outcome; `attempts` lists each channel tried."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    surface: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    images_requested: Mapped[int] = mapped_column(Integer, default=0)
    images_delivered: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float)
    cost: Mapped[Decimal | None] = mapped_column(Numeric(20, 8), nullable=True)
    attempts: Mapped[list] = mapped_column(JSON, default=list)
    images: Mapped[list | None] = mapped_column(JSON, nullable=True)
    """The images stored for this request: [{"id", "format", "bytes"}], served at /files/{id}.{ext}."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Meta(Base):
    """Gateway-wide values shared by every worker and instance (e.g. the URL signing secret)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Sealed)
    """Sealed at rest (db.sealed): these are secrets."""


class Task(Base):
    """Asynchronous work. The row is the source of truth: any worker of any instance may poll it
    (one at a time, by lease), so a restart loses nothing. Its outcome is written once, by a
    conditional update from a live status."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    surface: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    model_path: Mapped[str] = mapped_column(String(160))
    channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    jobs: Mapped[list] = mapped_column(JSON, default=list)
    """Upstream jobs: [{"id", "poll_url", "images": [...] once finished}]; more than one when
    the model makes fewer images per job than asked."""
    status: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[float | None] = mapped_column(Float, nullable=True)
    request: Mapped[dict] = mapped_column(JSON)
    input: Mapped[dict] = mapped_column(JSON)
    output: Mapped[list | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    meta: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    """Vendor facts a surface shows while and after the task runs (Midjourney: status, buttons,
    finalPrompt, the re-hosted preview), from Submitted/Pending/Finished.meta."""
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_events: Mapped[list | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_poll_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """Names the holder of the lease: every write a worker makes while it works on the task is
    conditional on it (a fence), so a worker whose lease ran out and was taken over changes nothing."""
    origin: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The base URL the client used to submit: where links in the task's webhooks point (unless
    public_base_url is set). Kept on the row, since any instance may send them."""
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """How many times the work of a synchronous model run as a task was started; an interrupted
    run is started again by whichever worker finds its lease expired, at most MAX_RUNS times."""
    cost: Mapped[Decimal | None] = mapped_column(Numeric(20, 8), nullable=True)
    """What the finished task was charged."""
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """The client's Idempotency-Key: a repeat with the same key (and body) is answered by this
    task instead of starting another; unique per API key (services.idempotency)."""
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The fingerprint of the request the key was first used with: another body is a 409."""

    __table_args__ = (UniqueConstraint("key_id", "idempotency_key", name="uq_tasks_key_idempotency"),)


class WebhookDelivery(Base):
    """One webhook to send (a task's outcome), with every attempt's result."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(40), index=True)
    event: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    origin: Mapped[str | None] = mapped_column(Text, nullable=True, index=True)
    """The url's scheme://host:port: deliveries share their destination's senders and backoff."""
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    log: Mapped[list] = mapped_column(JSON, default=list)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("task_id", "event", name="uq_webhook_task_event"),)


class WebhookDestination(Base):
    """A webhook origin that failed (no answer, 5xx or 429): the whole fleet sends to it again
    only after retry_at, one delivery at a time, until one succeeds and deletes the row."""

    __tablename__ = "webhook_destinations"

    origin: Mapped[str] = mapped_column(Text, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=1)
    """Failures in a row; failures of sends that overlapped in time count once."""
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    retry_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Account(Base):
    """A balance that one key, or a group of keys, spends. Available = balance - reserved."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    balance: Mapped[Decimal | None] = mapped_column(Numeric(20, 8), nullable=True)
    """None: no balance to run out of (a spend_limit may still cap it)."""
    reserved: Mapped[Decimal] = mapped_column(Numeric(20, 8), default=Decimal(0))
    """Held for requests in flight: the most each can still cost."""
    spent: Mapped[Decimal] = mapped_column(Numeric(20, 8), default=Decimal(0))
    spend_limit: Mapped[Decimal | None] = mapped_column(Numeric(20, 8), nullable=True)
    markup: Mapped[Decimal] = mapped_column(Numeric(12, 6), default=Decimal(1))
    """Every price this account pays is multiplied by it (1.2: list price + 20%)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerEntry(Base):
    """Append-only money movements. (request_id, kind) is unique: a request is held once and
    settled once, whatever retries, restarts and races happen."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    request_id: Mapped[str] = mapped_column(String(48))
    kind: Mapped[str] = mapped_column(String(16))
    """hold (reserved the most it can cost), settle (charged what was delivered), charge (a
    request whose hold was released while it stalled, charged when it delivered after all), topup."""
    amount: Mapped[Decimal] = mapped_column(Numeric(20, 8))
    unit_price: Mapped[Decimal | None] = mapped_column(Numeric(20, 8), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)
    """A hold of a synchronous request: the request renews it while it runs. One whose lease ran
    out unsettled belonged to a process that died, and the sweeper releases it. None: the hold
    belongs to a task, whose row settles it."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("request_id", "kind", name="uq_ledger_request_kind"),)


class PriceRow(Base):
    """A price set by the operator (config file or admin API); overrides the built-in defaults."""

    __tablename__ = "prices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    operation: Mapped[str] = mapped_column(String(32), default="*")
    dimensions: Mapped[dict] = mapped_column(JSON, default=dict)
    amount: Mapped[Decimal] = mapped_column(Numeric(20, 8))
    currency: Mapped[str] = mapped_column(String(8))
    tokens: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    """A token price (domain.catalog.TokenRates); `amount` is then 0."""
    source: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

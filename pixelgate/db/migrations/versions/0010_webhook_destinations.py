"""webhook destinations: each delivery's origin, and the origins that failed (their backoff)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 10:00:00
"""
from urllib.parse import urlsplit

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def origin(url: str) -> str:
    """services.fetch.origin as it was at this revision: a migration stays what it was."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def upgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_origin'), ['origin'], unique=False)
    op.create_table('webhook_destinations',
    sa.Column('origin', sa.Text(), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retry_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('origin')
    )
    # Only deliveries still to be sent need their origin; the history keeps NULL.
    deliveries = sa.table('webhook_deliveries', sa.column('id', sa.String), sa.column('url', sa.Text),
                          sa.column('origin', sa.Text), sa.column('delivered', sa.Boolean),
                          sa.column('attempts', sa.Integer))
    bind = op.get_bind()
    pending = bind.execute(sa.select(deliveries.c.id, deliveries.c.url).where(
        deliveries.c.delivered.is_(False), deliveries.c.attempts < 9)).all()
    for row in pending:
        bind.execute(deliveries.update().where(deliveries.c.id == row.id).values(origin=origin(row.url)))


def downgrade() -> None:
    op.drop_table('webhook_destinations')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_origin'))
        batch_op.drop_column('origin')

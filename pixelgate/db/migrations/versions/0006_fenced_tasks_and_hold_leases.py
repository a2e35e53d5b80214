"""fenced task leases, task origin and runs, hold leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 04:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_token', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('origin', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('runs', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_ledger_lease_until', ['lease_until'], unique=False)
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_token', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_column('lease_token')
    with op.batch_alter_table('ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_lease_until')
        batch_op.drop_column('lease_until')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('runs')
        batch_op.drop_column('origin')
        batch_op.drop_column('lease_token')

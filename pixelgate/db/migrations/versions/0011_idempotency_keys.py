"""tasks remember the client's Idempotency-Key and the fingerprint of the request it named; tasks are found by request id

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_tasks_key_idempotency', ['key_id', 'idempotency_key'])
        # usage counts a request answered from its own task through the task (services.usage)
        batch_op.create_index('ix_tasks_request_id', ['request_id'])


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_request_id')
        batch_op.drop_constraint('uq_tasks_key_idempotency', type_='unique')
        batch_op.drop_column('request_hash')
        batch_op.drop_column('idempotency_key')

"""markups per account and key group, token prices

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 08:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('markup', sa.Numeric(precision=12, scale=6), nullable=False,
                                      server_default='1'))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group', sa.String(length=64), nullable=True))
    with op.batch_alter_table('prices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tokens', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('prices', schema=None) as batch_op:
        batch_op.drop_column('tokens')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('group')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('markup')

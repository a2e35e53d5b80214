"""room for sealed webhook secrets (services.sealing); the values are sealed at start-up

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 09:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.alter_column('webhook_secret', existing_type=sa.String(length=64), type_=sa.Text(),
                              existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.alter_column('webhook_secret', existing_type=sa.Text(), type_=sa.String(length=64),
                              existing_nullable=True)

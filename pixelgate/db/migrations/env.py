"""Alembic environment: migrations always run on a connection handed in by pixelgate.db.session."""

from alembic import context

from pixelgate.db.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

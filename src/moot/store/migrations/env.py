"""Alembic environment: migrations run on the connection `moot.store` hands over, never from an ini file.

`Store.upgrade()` (and `moot db upgrade`) pass their connection in `config.attributes["connection"]`. To
write a new revision, autogenerate it against an up-to-date database on such a connection:
`alembic.command.revision(moot.store._database.alembic_config(connection), "what", autogenerate=True)`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from moot.store.tables import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("moot migrations run through `moot db upgrade` or Store.upgrade(), not alone")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()

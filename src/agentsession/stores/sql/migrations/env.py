"""Alembic environment of agentsession's own tables.

Run only through ``agentsession.stores.sql.migrate`` (or ``agentsession migrate``), which
holds the cross-process lock and passes a sync ``Connection`` (from
``AsyncConnection.run_sync``) in ``config.attributes["connection"]``. The caller owns
that connection's transaction and commits it; nothing here touches logging
configuration, so the host app's logging stays as it is.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from agentsession.stores.sql.schema import comparison_filter, tables_from


def _run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("agentsession migrations run online only (no --sql mode)")
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "agentsession migrations need a Connection in config.attributes['connection']; "
            "run them with agentsession.stores.sql.migrate.migrate(engine) or "
            "`agentsession migrate`"
        )
    # The table set ``migrate`` put in the config (prefix and schema), else the default.
    target = tables_from(context.config.attributes)
    context.configure(
        connection=connection,
        target_metadata=target.metadata,
        version_table=target.version_table,
        version_table_schema=target.schema,
        compare_type=True,
        # Autogenerate leaves alone what the metadata does not describe on this database.
        include_object=comparison_filter(connection.dialect.name, target.prefix),
    )
    with context.begin_transaction():
        context.run_migrations()


_run()

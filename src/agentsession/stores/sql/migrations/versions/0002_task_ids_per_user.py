"""Task ids are private to their user: chat_tasks' key becomes (id, user_id).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Before, task ids were one namespace shared by every user: one user's ``t1`` refused
another's with a conflict, which told that the id existed. Every existing row keeps
its place (ids were unique, so they stay unique per user); feedback's foreign key
to its task becomes ``(task_id, user_id)``, served by the existing unique index
``uq_feedback_task_id_user_id``.

SQLite cannot alter a key: both tables are rebuilt (``batch_alter_table``), which
``migrate`` runs with foreign keys off and checks with ``PRAGMA foreign_key_check``
before it commits, so dropping the old ``chat_tasks`` cascades to nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import context, op

from agentsession.stores.sql.schema import tables_from

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _rekey(("id", "user_id"), ("task_id", "user_id"), ("id", "user_id"))


def downgrade() -> None:
    # Only possible while no two users share a task id (the new key allows that).
    _rekey(("id",), ("task_id",), ("id",))


def _rekey(key: tuple[str, ...], local: tuple[str, ...], remote: tuple[str, ...]) -> None:
    """Give chat_tasks the primary ``key`` and feedback the foreign key ``local -> remote``."""
    target = tables_from(context.config.attributes)
    p, schema = target.prefix, target.schema
    tasks, feedback = f"{p}chat_tasks", f"{p}feedback"
    fk, pk = f"fk_{p}feedback_task_id_{p}chat_tasks", f"pk_{p}chat_tasks"
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(feedback, recreate="always") as batch:
            batch.drop_constraint(fk, type_="foreignkey")
        with op.batch_alter_table(tasks, recreate="always") as batch:
            batch.drop_constraint(pk, type_="primary")
            batch.create_primary_key(pk, list(key))
        with op.batch_alter_table(feedback, recreate="always") as batch:
            batch.create_foreign_key(fk, tasks, list(local), list(remote), ondelete="CASCADE")
        return
    op.drop_constraint(fk, feedback, type_="foreignkey", schema=schema)
    op.drop_constraint(pk, tasks, type_="primary", schema=schema)
    op.create_primary_key(pk, tasks, list(key), schema=schema)
    op.create_foreign_key(
        fk,
        feedback,
        tasks,
        list(local),
        list(remote),
        ondelete="CASCADE",
        source_schema=schema,
        referent_schema=schema,
    )
